"""A task's commits as the code host sees them (for ``run_tasks.TaskRunner``).

The workers' git reports miss what a worker pushed right before it died (its report never
got out), so the host is asked: the pull request's commits for the outcome, the branch's
commits over the base before a task is failed for having pushed nothing. Either call failing
(an outage, a branch never pushed) is logged and the caller keeps what the reports said.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from codeyard.domain.code_host import PullRequest, PullRequestState
from codeyard.domain.errors import CodeyardError
from codeyard.ports.code_host import CodeHost

log = structlog.get_logger(__name__)


async def pull_request_commits(
    host: CodeHost, pr: PullRequest, reported: Sequence[str], *, task_id: str
) -> tuple[str, ...]:
    """The commits of ``pr`` over its base, oldest first, or ``reported`` when the host
    cannot say. A merged or closed PR is read by its last head sha (its branch may be gone
    or moved on); an open one by its branch, which a later push may have moved."""
    head = pr.head_sha if pr.state is not PullRequestState.OPEN and pr.head_sha else pr.head
    try:
        return tuple(await host.branch_commits(pr.repo, head=head, base=pr.base))
    except CodeyardError as exc:
        log.warning(
            "cannot list the pull request's commits: keeping the workers' reports",
            task_id=task_id,
            pr=pr.number,
            error=str(exc),
        )
        return tuple(reported)


async def pushed_commits(
    host: CodeHost, repo: str, *, branch: str, base: str, task_id: str
) -> list[str]:
    """The commits ``branch`` has over ``base`` (what earlier workers pushed, reported or
    not); empty when it has none, does not exist, or the host cannot say (logged)."""
    try:
        return await host.branch_commits(repo, head=branch, base=base)
    except CodeyardError as exc:
        log.info("cannot list the task branch's commits", task_id=task_id, error=str(exc))
        return []
