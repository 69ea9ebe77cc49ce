"""Pull requests, reviews and the git step a worker runs around an agent turn.

A task ends as a branch pushed to a code host and a pull request on it; a reviewer reads the
diff and either squash-merges it or sends it back with feedback. These models are shared by
the CodeHost adapters (GitHub, the local forge), the worker's git flow and the task use cases.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AfterValidator, AwareDatetime, Field, PositiveInt, model_validator

from codeyard.domain.base import DomainModel
from codeyard.domain.errors import Conflict, InvalidInput, InvalidRequest, NotFound, Unavailable

# git check-ref-format, simplified: no spaces, no "..", no control chars, no leading "-".
_BRANCH_RE = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)[A-Za-z0-9._/-]{1,200}(?<![./])$")
_REPO_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}(/[A-Za-z0-9_.-]{1,100})?$")


def _check_branch(value: str) -> str:
    if not _BRANCH_RE.match(value) or value.endswith(".lock"):
        raise InvalidRequest("not a valid branch name", branch=value)
    return value


def _check_repo(value: str) -> str:
    if not _REPO_RE.match(value):
        raise InvalidRequest("a repository is NAME or OWNER/NAME", repo=value)
    return value


Branch = Annotated[str, AfterValidator(_check_branch)]
#: A repository on a code host: ``owner/name`` (GitHub) or ``name`` (the local forge).
RepoName = Annotated[str, AfterValidator(_check_repo)]


class PullRequestState(StrEnum):
    OPEN = "open"
    MERGED = "merged"
    CLOSED = "closed"


class MergeMethod(StrEnum):
    SQUASH = "squash"
    MERGE = "merge"
    REBASE = "rebase"


class PullRequest(DomainModel):
    repo: RepoName
    number: PositiveInt
    head: Branch
    base: Branch
    title: str
    body: str = ""
    state: PullRequestState = PullRequestState.OPEN
    url: str = ""
    #: The head commit when last read.
    head_sha: str | None = None
    #: The commit the merge made on ``base`` (squash: the single new commit).
    merge_sha: str | None = None
    created_at: AwareDatetime | None = None


class ReviewDecision(StrEnum):
    APPROVE = "approve"
    REQUEST_CHANGES = "request_changes"


class ReviewVerdict(DomainModel):
    """What a reviewer agent decided about one pull request."""

    decision: ReviewDecision
    feedback: str = ""

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.decision is ReviewDecision.REQUEST_CHANGES and not self.feedback.strip():
            raise InvalidRequest("a change request needs feedback")
        return self


class GitStep(DomainModel):
    """The git flow around one agent turn inside a worker.

    Before the turn: clone ``repo_url`` into the workdir when it holds no repository yet,
    else fetch; check out ``branch`` (created from ``origin/<base>`` when the remote does not
    have it, else its remote state) with a clean tree. After a successful turn: commit every
    change with ``commit_message`` and push ``branch``, pulling with rebase first when the
    remote moved. The token, read from the worker's environment variable ``token_env``,
    reaches git only through a credential helper: never in a URL, an argument or an event.
    """

    repo_url: str
    base: Branch = "main"
    branch: Branch
    commit_message: str = Field(min_length=1)
    push: bool = True
    token_env: str | None = None
    author_name: str = "codeyard"
    author_email: str = "codeyard@localhost"

    @model_validator(mode="after")
    def _check(self) -> Self:
        if "@" in self.repo_url.split("://", 1)[-1].split("/", 1)[0]:
            raise InvalidRequest("credentials do not belong in repo_url: use token_env")
        return self


class GitReport(DomainModel):
    """What the git step did (published as the ``detail`` of a ``git`` lifecycle event)."""

    branch: Branch
    base: Branch
    #: Commits this turn added on top of what the remote branch had, oldest first.
    commits: tuple[str, ...] = ()
    head_sha: str | None = None
    pushed: bool = False
    #: The remote branch had moved and the commits were rebased onto it before pushing.
    rebased: bool = False
    error: str | None = None


# --- errors -----------------------------------------------------------------------------------


class PullRequestNotFound(NotFound):
    code = "pull_request_not_found"


class RepositoryNotFound(NotFound):
    code = "repository_not_found"


class MergeConflict(Conflict):
    """The head does not merge cleanly into the base; ``fields["files"]`` lists the paths."""

    code = "merge_conflict"


class PullRequestClosed(Conflict):
    """The pull request is merged or closed: it cannot change any more."""

    code = "pull_request_closed"


class PullRequestHeadChanged(Conflict):
    """The head moved between reading the pull request and merging it: read it again."""

    code = "pull_request_head_changed"


class MergeBlocked(Conflict):
    """The host refuses the merge by policy (required reviews or checks, a merge method the
    repository disallows); ``fields["message"]`` is the host's reason."""

    code = "merge_blocked"


class CodeHostAuthFailed(InvalidInput):
    """The code host rejected the credentials or they lack a permission (HTTP 401/403).
    The fields carry the status, the URL path and the host's message, never the token."""

    code = "code_host_auth_failed"


class CodeHostUnavailable(Unavailable):
    """The code host failed or refused for a while (rate limit: ``fields["reset_at"]``)."""

    code = "code_host_unavailable"
    retryable = True


class GitFailed(Conflict):
    """A git command in the worker failed (``fields["step"]``, ``fields["stderr"]`` redacted)."""

    code = "git_failed"
