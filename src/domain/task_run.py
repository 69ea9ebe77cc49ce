"""Parallel coding tasks: what each one is asked, and how it ended."""

from __future__ import annotations

import re
import uuid
from enum import StrEnum
from typing import Self

from pydantic import Field, NonNegativeFloat, NonNegativeInt, model_validator

from codeyard.domain.base import DomainModel, Name
from codeyard.domain.code_host import Branch, PullRequest, RepoName
from codeyard.domain.errors import InvalidRequest


def _task_id() -> str:
    return "t-" + uuid.uuid4().hex[:12]


class CodingTask(DomainModel):
    """One unit of work: a prompt against the repository, ending as a reviewed PR."""

    id: Name = Field(default_factory=_task_id)
    prompt: str
    #: Area of the code (``frontend``, ``backend``): the conventional-commit scope.
    scope: str | None = None
    title: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.prompt.strip():
            raise InvalidRequest("a task needs a prompt", task_id=self.id)
        if self.scope is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,40}", self.scope):
            raise InvalidRequest("scope: lowercase letters, digits, - and _", scope=self.scope)
        return self

    @property
    def branch(self) -> str:
        return f"codeyard/{self.id}"

    @property
    def headline(self) -> str:
        """The PR title and commit subject: ``title`` or the prompt's first line, cut."""
        text = (self.title or self.prompt).strip().splitlines()[0]
        return text if len(text) <= 72 else text[:69] + "..."

    @property
    def commit_message(self) -> str:
        """A conventional commit message: ``feat(scope): headline``."""
        scope = f"({self.scope})" if self.scope else ""
        return f"feat{scope}: {self.headline}"


class RepoTarget(DomainModel):
    """The repository tasks work on, as the code host and as the workers see it."""

    name: RepoName
    #: The clone URL inside worker containers (no credentials: see ``token_env``).
    clone_url: str
    base: Branch = "main"
    #: Environment variable (in the worker) holding the token git's credential helper uses.
    token_env: str | None = None


class TaskStatus(StrEnum):
    MERGED = "merged"
    """Reviewed, approved and squash-merged into the base branch."""
    CHANGES_REQUESTED = "changes_requested"
    """The reviewer still asked for changes after the last allowed round."""
    CONFLICT = "conflict"
    """Approved, but it no longer merges cleanly (another task changed the same lines)."""
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskOutcome(DomainModel):
    task_id: Name
    status: TaskStatus
    worker_id: Name | None = None
    branch: Branch | None = None
    #: Every commit pushed for the task, across rounds, oldest first.
    commits: tuple[str, ...] = ()
    pull_request: PullRequest | None = None
    #: Developer rounds run (1 = accepted or refused after the first).
    rounds: NonNegativeInt = 0
    cost_usd: NonNegativeFloat = 0.0
    #: The reviewer's feedback, one entry per change request.
    feedback: tuple[str, ...] = ()
    error: str | None = None
    #: Conflicting paths, for ``status=conflict``.
    conflict_files: tuple[str, ...] = ()
    #: Why each worker of the task died (``container_killed``, ``container_oom``...), in
    #: order: each was replaced by a new worker continuing the pushed branch, until too many
    #: died (then ``status=failed`` and ``error`` starts with ``dead_letter:``).
    worker_failures: tuple[str, ...] = ()
