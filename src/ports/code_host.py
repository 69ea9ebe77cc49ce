"""CodeHost: where task branches become pull requests, get reviewed and merged."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from codeyard.domain.code_host import MergeMethod, PullRequest


@runtime_checkable
class CodeHost(Protocol):
    """GitHub, or the local forge (bare repositories on disk) for offline work and tests.

    Contract:
    - ``open_pull_request`` opens a PR from ``head`` into ``base``; when an OPEN one exists
      for the same head and base it is returned instead (idempotent: a retried task does not
      open a second). An unknown repository raises ``RepositoryNotFound``; a head branch the
      repository does not have raises ``InvalidRequest``.
    - ``get_pull_request`` returns the PR's current state (``head_sha`` included);
      ``PullRequestNotFound`` for an unknown number.
    - ``diff`` is the unified diff of the head against its merge base with ``base``
      (what the PR changes, as ``git diff base...head`` shows it).
    - ``comment`` adds a comment; ``comments`` lists them oldest first.
    - ``branch_commits`` lists the commits ``head`` has over ``base`` (reachable from
      ``head``, not from ``base``: ``git rev-list --reverse base..head``) as full SHAs,
      oldest first; empty when ``head`` adds nothing. ``head`` and ``base`` are branch
      names or commit SHAs. A pull request's commits are those of its ``head_sha`` (or
      ``head``) over its ``base``; a squash merge keeps listing them (the squash commit on
      ``base`` is a new one). An unknown repository raises ``RepositoryNotFound``; a
      ``head`` or ``base`` the repository does not have raises ``InvalidRequest``.
    - ``merge`` merges an OPEN PR (squash by default: one new commit on ``base`` holding the
      whole change, with ``message`` or the PR title) and returns it MERGED with
      ``merge_sha``. Changes that do not apply cleanly raise ``MergeConflict`` (with the
      conflicting ``files``) and leave ``base`` untouched. Merging a merged or closed PR
      raises ``PullRequestClosed``.
    - Host throttling or outage: ``CodeHostUnavailable`` (``retryable``; ``reset_at`` when
      the host says when to come back).
    """

    async def open_pull_request(
        self, repo: str, *, head: str, base: str, title: str, body: str = ""
    ) -> PullRequest: ...

    async def get_pull_request(self, repo: str, number: int) -> PullRequest: ...

    async def diff(self, repo: str, number: int) -> str: ...

    async def comment(self, repo: str, number: int, body: str) -> None: ...

    async def comments(self, repo: str, number: int) -> list[str]: ...

    async def branch_commits(self, repo: str, *, head: str, base: str) -> list[str]: ...

    async def merge(
        self,
        repo: str,
        number: int,
        *,
        method: MergeMethod = MergeMethod.SQUASH,
        message: str | None = None,
    ) -> PullRequest: ...
