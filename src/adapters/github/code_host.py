"""GitHubCodeHost: the CodeHost port over the GitHub REST API (pulls, issue comments, merge).

See :class:`codeyard.ports.code_host.CodeHost` for the contract and :mod:`.api` for
authentication, rate limits and the errors every request can raise. GitHub-specific choices:

- GitHub answers 404 both for an unknown pull request and for a repository that does not
  exist or the token cannot see; on a 404 the repository is probed once to tell
  ``PullRequestNotFound`` from ``RepositoryNotFound``.
- ``merge`` reads the PR first: a merged or closed one raises ``PullRequestClosed`` without
  a write, the default squash title is the PR title, and the head SHA read is sent as
  ``sha`` so that a head pushed in between raises ``PullRequestHeadChanged`` (409) rather
  than merging unreviewed commits. GitHub does not name conflicting files, so a
  ``MergeConflict`` carries ``files=[]``; a refusal by policy (reviews, checks, disallowed
  method) raises ``MergeBlocked``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from codeyard.adapters.github.api import DIFF, GitHubApi, Sleep, github_message, http_error
from codeyard.adapters.github.mapping import (
    check_number,
    compare_ref,
    parse_json,
    pull_path,
    pull_request_from,
    repo_path,
    split_repo,
    unexpected,
)
from codeyard.domain.code_host import (
    MergeBlocked,
    MergeConflict,
    MergeMethod,
    PullRequest,
    PullRequestClosed,
    PullRequestHeadChanged,
    PullRequestNotFound,
    PullRequestState,
    RepositoryNotFound,
)
from codeyard.domain.errors import AlreadyExists, CodeyardError, InvalidRequest
from codeyard.ports.clock import Clock

GITHUB_API = "https://api.github.com"
_PAGE_SIZE = 100


class GitHubCodeHost:
    """CodeHost over GitHub. The caller owns ``client`` (or uses :meth:`connect`)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        token: str,
        api_url: str = GITHUB_API,
        wait_on_rate_limit: bool = False,
        max_wait_s: float = 60.0,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._api = GitHubApi(
            client,
            token=token,
            api_url=api_url,
            wait_on_rate_limit=wait_on_rate_limit,
            max_wait_s=max_wait_s,
            sleep=sleep,
            clock=clock,
        )

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        token: str,
        *,
        api_url: str = GITHUB_API,
        timeout_s: float = 30.0,
        wait_on_rate_limit: bool = False,
        max_wait_s: float = 60.0,
    ) -> AsyncIterator[GitHubCodeHost]:
        """A host on its own client, closed when the block ends."""
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            yield cls(
                client,
                token=token,
                api_url=api_url,
                wait_on_rate_limit=wait_on_rate_limit,
                max_wait_s=max_wait_s,
            )

    # --- pull requests ----------------------------------------------------------------------

    async def open_pull_request(
        self, repo: str, *, head: str, base: str, title: str, body: str = ""
    ) -> PullRequest:
        owner, _ = split_repo(repo)
        payload = {"title": title, "head": head, "base": base, "body": body}
        response = await self._api.request("POST", f"{repo_path(repo)}/pulls", json=payload)
        if response.status_code == 201:
            return pull_request_from(repo, parse_json(response))
        if response.status_code == 404:
            raise http_error(RepositoryNotFound, "no such repository", response, repo=repo)
        if response.status_code == 422:
            if "already exists" in github_message(response):
                return await self._open_pull_request_for(repo, owner, head, base, response)
            raise http_error(
                InvalidRequest, "GitHub refused the pull request", response, head=head, base=base
            )
        raise unexpected(response)

    async def _open_pull_request_for(
        self, repo: str, owner: str, head: str, base: str, refusal: httpx.Response
    ) -> PullRequest:
        params = {"head": f"{owner}:{head}", "base": base, "state": "open"}
        response = await self._api.request("GET", f"{repo_path(repo)}/pulls", params=params)
        if response.status_code != 200:
            raise unexpected(response)
        found = parse_json(response)
        if not isinstance(found, list) or not found:
            # Closed between GitHub's refusal and this read: the caller may simply retry.
            raise http_error(
                AlreadyExists, "a pull request exists but is not open", refusal, head=head
            )
        return pull_request_from(repo, found[0])

    async def get_pull_request(self, repo: str, number: int) -> PullRequest:
        response = await self._api.request("GET", pull_path(repo, number))
        if response.status_code == 200:
            return pull_request_from(repo, parse_json(response))
        raise await self._failure(response, repo, number)

    async def diff(self, repo: str, number: int) -> str:
        response = await self._api.request("GET", pull_path(repo, number), accept=DIFF)
        if response.status_code == 200:
            return response.text
        raise await self._failure(response, repo, number)

    # --- comments -----------------------------------------------------------------------------

    async def comment(self, repo: str, number: int, body: str) -> None:
        path = f"{repo_path(repo)}/issues/{check_number(number)}/comments"
        response = await self._api.request("POST", path, json={"body": body})
        if response.status_code != 201:
            raise await self._failure(response, repo, number)

    async def comments(self, repo: str, number: int) -> list[str]:
        url: str | None = f"{repo_path(repo)}/issues/{check_number(number)}/comments"
        params: dict[str, str] | None = {"per_page": str(_PAGE_SIZE)}
        bodies: list[str] = []
        while url is not None:
            response = await self._api.request("GET", url, params=params)
            if response.status_code != 200:
                raise await self._failure(response, repo, number)
            page = parse_json(response)
            if not isinstance(page, list):
                raise unexpected(response)
            bodies.extend(str(item.get("body") or "") for item in page)
            # GitHub's "next" link carries every query parameter itself.
            url, params = response.links.get("next", {}).get("url"), None
        return bodies

    # --- commits ------------------------------------------------------------------------------

    async def branch_commits(self, repo: str, *, head: str, base: str) -> list[str]:
        # The compare API lists the commits of head since its merge base with base (what
        # base..head is), oldest first, in pages; ``total_commits`` says when all are in,
        # whether or not GitHub sends a Link header.
        path = f"{repo_path(repo)}/compare/{compare_ref(base)}...{compare_ref(head)}"
        shas: list[str] = []
        page = 1
        while True:
            params = {"per_page": str(_PAGE_SIZE), "page": str(page)}
            response = await self._api.request("GET", path, params=params)
            if response.status_code != 200:
                raise await self._compare_failure(response, repo, head=head, base=base)
            data = parse_json(response)
            try:
                total = int(data["total_commits"])
                batch = [str(item["sha"]) for item in data["commits"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise unexpected(response) from exc
            shas.extend(batch)
            if not batch or len(shas) >= total:
                return shas
            page += 1

    async def _compare_failure(
        self, response: httpx.Response, repo: str, *, head: str, base: str
    ) -> CodeyardError:
        """404 is an unknown repository or ref (the repository is probed to tell which)."""
        if response.status_code != 404:
            return unexpected(response)
        probe = await self._api.request("GET", repo_path(repo))
        if probe.status_code == 404:
            return http_error(RepositoryNotFound, "no such repository", probe, repo=repo)
        return http_error(
            InvalidRequest, "no such branch or commit", response, head=head, base=base
        )

    # --- merge --------------------------------------------------------------------------------

    async def merge(
        self,
        repo: str,
        number: int,
        *,
        method: MergeMethod = MergeMethod.SQUASH,
        message: str | None = None,
    ) -> PullRequest:
        current = await self.get_pull_request(repo, number)
        if current.state is not PullRequestState.OPEN:
            raise PullRequestClosed(
                "the pull request is no longer open",
                repo=repo,
                number=number,
                state=current.state.value,
            )
        payload: dict[str, str] = {"merge_method": method.value}
        if current.head_sha:
            payload["sha"] = current.head_sha
        if message and message.strip():
            title, _, rest = message.strip().partition("\n")
            payload["commit_title"] = title.strip()
            if rest.strip():
                payload["commit_message"] = rest.strip()
        elif method is MergeMethod.SQUASH:
            payload["commit_title"] = f"{current.title} (#{number})"
        response = await self._api.request("PUT", f"{pull_path(repo, number)}/merge", json=payload)
        if response.status_code != 200:
            raise await self._merge_failure(response, repo, number)
        outcome = parse_json(response)
        merge_sha = outcome.get("sha") if isinstance(outcome, dict) else None
        merged = await self.get_pull_request(repo, number)
        # The PUT's sha is the merge commit; a read racing GitHub's update may lag behind it.
        return merged.model_copy(
            update={"state": PullRequestState.MERGED, "merge_sha": merge_sha or merged.merge_sha}
        )

    async def _merge_failure(
        self, response: httpx.Response, repo: str, number: int
    ) -> CodeyardError:
        text = github_message(response).lower()
        if response.status_code == 405 and "already merged" in text:
            return http_error(PullRequestClosed, "already merged", response, number=number)
        if response.status_code == 405 and "not mergeable" in text:
            return http_error(MergeConflict, "the head does not merge cleanly", response, files=[])
        if response.status_code == 405:
            return http_error(MergeBlocked, "GitHub refused the merge", response, number=number)
        if response.status_code == 409:
            return http_error(PullRequestHeadChanged, "the head changed before the merge", response)
        if response.status_code == 422:
            return http_error(InvalidRequest, "GitHub refused the merge request", response)
        return await self._failure(response, repo, number)

    async def _failure(self, response: httpx.Response, repo: str, number: int) -> CodeyardError:
        """The error for a failed pull-request call (404 probes the repository)."""
        if response.status_code != 404:
            return unexpected(response)
        probe = await self._api.request("GET", repo_path(repo))
        if probe.status_code == 404:
            return http_error(RepositoryNotFound, "no such repository", probe, repo=repo)
        return http_error(
            PullRequestNotFound, "no such pull request", response, repo=repo, number=number
        )
