"""Tasks (what a user wants done) and jobs (how the work queue carries them)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from enum import StrEnum

from pydantic import AwareDatetime, Field, NonNegativeInt, PositiveInt

from codeyard.domain.agent import AgentRequest
from codeyard.domain.base import DomainModel, Name, StrictJsonObject
from codeyard.domain.worker import WorkerSpec


def _new_id() -> str:
    return uuid.uuid4().hex


class Task(DomainModel):
    """One unit of coding work: a prompt against a repository, ending as a branch/PR."""

    id: Name = Field(default_factory=_new_id)
    request: AgentRequest
    worker: WorkerSpec = Field(default_factory=WorkerSpec)
    repo: str | None = None
    base_branch: str = "main"
    branch: str | None = None
    scope: str | None = None


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    """Failed and will not be retried: attempts exhausted (dead letter)."""
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Job(DomainModel):
    """A queued unit of work with a lease. ``payload`` is JSON (usually a dumped Task).

    ``payload`` and ``result`` nest at most ``JSON_MAX_DEPTH`` levels (deeper raises
    :class:`~codeyard.domain.errors.InvalidRequest`): a stored job must read back, and
    pydantic reads JSON only ~200 levels deep."""

    id: Name = Field(default_factory=_new_id)
    queue: Name
    payload: StrictJsonObject
    status: JobStatus = JobStatus.QUEUED
    attempts: NonNegativeInt = 0
    max_attempts: PositiveInt = 3
    lease_owner: str | None = None
    lease_expires_at: AwareDatetime | None = None
    available_at: AwareDatetime
    created_at: AwareDatetime
    updated_at: AwareDatetime
    last_error: str | None = None
    result: StrictJsonObject | None = None

    @property
    def attempts_left(self) -> int:
        return max(self.max_attempts - self.attempts, 0)


class RetryPolicy(DomainModel):
    """Exponential backoff: ``base * factor**(attempt-1)``, capped."""

    base_s: float = Field(default=1.0, gt=0)
    factor: float = Field(default=2.0, ge=1)
    max_s: float = Field(default=300.0, gt=0)

    def delay(self, attempt: int) -> timedelta:
        """Delay before retry number ``attempt`` (1 = the first retry)."""
        exponent = max(attempt - 1, 0)
        # Cap the exponent too, so huge attempt counts cannot overflow the float.
        seconds = self.base_s * self.factor ** min(exponent, 64)
        return timedelta(seconds=min(seconds, self.max_s))
