"""LocalForge: a CodeHost made of bare git repositories on disk plus in-memory PR records.

``<root>/<name>.git`` holds each repository (``name`` may be ``owner/name``); the forge's
own files (a private ``HOME`` for git, scratch clones) live under ``<root>/.forge``, which
no repository name can reach (names never start with a dot). Pull requests live in this
object only: numbered 1, 2, ... per repository, gone with the process.

Every change to one repository's pull requests (open, merge, close) holds that
repository's lock, so two opens of the same head cannot both create a PR and two merges
into one base run one after the other. Reads take no lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from pydantic import TypeAdapter

from codeyard.adapters.forge import repos
from codeyard.adapters.forge.git import Git
from codeyard.adapters.forge.merge import merge_into_base
from codeyard.domain.code_host import (
    Branch,
    MergeMethod,
    PullRequest,
    PullRequestClosed,
    PullRequestNotFound,
    PullRequestState,
    RepoName,
    RepositoryNotFound,
)
from codeyard.domain.errors import AlreadyExists, InvalidRequest
from codeyard.ports.clock import Clock

_REPO = TypeAdapter(RepoName)
_BRANCH = TypeAdapter(Branch)


@dataclass
class _Record:
    pr: PullRequest
    comments: list[str] = field(default_factory=list)


class LocalForge:
    """The offline code host (see the module docstring); satisfies ``CodeHost``."""

    def __init__(self, root: Path, *, clock: Clock, merge_attempts: int = 3) -> None:
        self.root = root.absolute()
        self._clock = clock
        self._merge_attempts = merge_attempts
        self._git = Git(self.root / ".forge" / "home")
        self._scratch = self.root / ".forge" / "tmp"
        self._prs: dict[str, dict[int, _Record]] = {}
        self._locks: dict[str, anyio.Lock] = {}

    @property
    def git_home(self) -> Path:
        """The private ``HOME`` every forge git process runs with."""
        return self._git.home

    # --- repositories ----------------------------------------------------------------------

    def repo_path(self, name: str) -> Path:
        """Where repository ``name`` lives (whether or not it exists)."""
        checked = _REPO.validate_python(name)
        if any(part.startswith(".") for part in checked.split("/")):
            raise InvalidRequest("a forge repository name cannot start with a dot", repo=name)
        return self.root / f"{checked}.git"

    async def create_repo(
        self,
        name: str,
        *,
        files: Mapping[str, str] | None = None,
        default_branch: str = "main",
    ) -> Path:
        """Create the bare repository ``name`` with one commit of ``files`` on
        ``default_branch``; ``AlreadyExists`` when it exists. Returns its path."""
        path = self.repo_path(name)
        branch = _BRANCH.validate_python(default_branch)
        async with self._lock(name):
            if await anyio.Path(path).exists():
                raise AlreadyExists("the repository exists", repo=name)
            await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
            await repos.create_bare(
                self._git, path, self._scratch, files=dict(files or {}), default_branch=branch
            )
        return path

    async def branch_sha(self, repo: str, branch: str) -> str | None:
        """The commit ``branch`` points at, or None when the repository has no such branch."""
        path = await self._existing(repo)
        return await repos.rev_parse(self._git, path, _BRANCH.validate_python(branch))

    async def read_file(self, repo: str, branch: str, path: str) -> str | None:
        """The text of ``path`` on ``branch``, or None when there is no such file."""
        bare = await self._existing(repo)
        return await repos.show_file(self._git, bare, _BRANCH.validate_python(branch), path)

    async def commit_files(
        self,
        repo: str,
        branch: str,
        files: Mapping[str, str | None],
        *,
        base: str = "main",
        message: str = "Update files",
    ) -> str:
        """Commit ``files`` (None deletes) on ``branch``, creating it from ``base`` when
        missing, and return the new commit: what a worker's push does, for seeding and
        tests."""
        bare = await self._existing(repo)
        return await repos.commit_files(
            self._git, bare, self._scratch, branch=_BRANCH.validate_python(branch),
            base=_BRANCH.validate_python(base), files=files, message=message,
        )  # fmt: skip

    # --- CodeHost ----------------------------------------------------------------------------

    async def open_pull_request(
        self, repo: str, *, head: str, base: str, title: str, body: str = ""
    ) -> PullRequest:
        bare = await self._existing(repo)
        head, base = _BRANCH.validate_python(head), _BRANCH.validate_python(base)
        async with self._lock(repo):
            records = self._prs.setdefault(repo, {})
            for record in records.values():
                pr = record.pr
                if pr.state is PullRequestState.OPEN and (pr.head, pr.base) == (head, base):
                    return await self._refreshed(record)
            head_sha = await repos.rev_parse(self._git, bare, head)
            if head_sha is None:
                raise InvalidRequest("the head branch does not exist", repo=repo, head=head)
            if await repos.rev_parse(self._git, bare, base) is None:
                raise InvalidRequest("the base branch does not exist", repo=repo, base=base)
            number = len(records) + 1
            pr = PullRequest(
                repo=repo, number=number, head=head, base=base, title=title, body=body,
                url=f"forge://{repo}/pulls/{number}", head_sha=head_sha,
                created_at=self._clock.now(),
            )  # fmt: skip
            records[number] = _Record(pr)
            return pr

    async def get_pull_request(self, repo: str, number: int) -> PullRequest:
        return await self._refreshed(await self._record(repo, number))

    async def diff(self, repo: str, number: int) -> str:
        pr = await self._refreshed(await self._record(repo, number))
        head = pr.head_sha or f"refs/heads/{pr.head}"
        return await repos.diff(self._git, self.repo_path(repo), f"refs/heads/{pr.base}", head)

    async def comment(self, repo: str, number: int, body: str) -> None:
        (await self._record(repo, number)).comments.append(body)

    async def comments(self, repo: str, number: int) -> list[str]:
        return list((await self._record(repo, number)).comments)

    async def branch_commits(self, repo: str, *, head: str, base: str) -> list[str]:
        bare = await self._existing(repo)
        resolved: list[str] = []
        for role, rev in (("head", head), ("base", base)):
            sha = await repos.resolve(self._git, bare, _BRANCH.validate_python(rev))
            if sha is None:
                raise InvalidRequest(f"no such branch or commit ({role})", repo=repo, rev=rev)
            resolved.append(sha)
        head_sha, base_sha = resolved
        return await repos.rev_list(self._git, bare, base_sha, head_sha)

    async def merge(
        self,
        repo: str,
        number: int,
        *,
        method: MergeMethod = MergeMethod.SQUASH,
        message: str | None = None,
    ) -> PullRequest:
        record = await self._record(repo, number)
        bare = self.repo_path(repo)
        async with self._lock(repo):
            pr = record.pr
            if pr.state is not PullRequestState.OPEN:
                raise PullRequestClosed(
                    "the pull request is not open", repo=repo, number=number, state=pr.state
                )
            head_sha = await repos.rev_parse(self._git, bare, pr.head)
            if head_sha is None:
                raise InvalidRequest("the head branch is gone", repo=repo, head=pr.head)
            if await repos.rev_parse(self._git, bare, pr.base) is None:
                raise InvalidRequest("the base branch is gone", repo=repo, base=pr.base)
            text = message or pr.title
            if pr.body.strip():
                text = f"{text}\n\n{pr.body.strip()}"
            merge_sha = await merge_into_base(
                self._git, bare, self._scratch, base=pr.base, head_sha=head_sha,
                method=MergeMethod(method), message=text, attempts=self._merge_attempts,
            )  # fmt: skip
            record.pr = pr.model_copy(
                update={"state": PullRequestState.MERGED, "head_sha": head_sha,
                        "merge_sha": merge_sha}
            )  # fmt: skip
            return record.pr

    async def close_pull_request(self, repo: str, number: int) -> PullRequest:
        """Close an OPEN pull request without merging (``PullRequestClosed`` otherwise)."""
        record = await self._record(repo, number)
        async with self._lock(repo):
            if record.pr.state is not PullRequestState.OPEN:
                raise PullRequestClosed("the pull request is not open", repo=repo, number=number)
            record.pr = record.pr.model_copy(update={"state": PullRequestState.CLOSED})
            return record.pr

    # --- helpers -----------------------------------------------------------------------------

    def _lock(self, repo: str) -> anyio.Lock:
        # Created on first use, inside the event loop (anyio locks bind to their backend).
        return self._locks.setdefault(repo, anyio.Lock())

    async def _existing(self, repo: str) -> Path:
        path = self.repo_path(repo)
        if not await anyio.Path(path / "HEAD").is_file():
            raise RepositoryNotFound("no such repository on the forge", repo=repo)
        return path

    async def _record(self, repo: str, number: int) -> _Record:
        await self._existing(repo)
        record = self._prs.get(repo, {}).get(number)
        if record is None:
            raise PullRequestNotFound("no such pull request", repo=repo, number=number)
        return record

    async def _refreshed(self, record: _Record) -> PullRequest:
        """The PR with ``head_sha`` read now (an open PR follows its branch; a merged or
        closed one keeps the sha it had, as does one whose branch was deleted)."""
        pr = record.pr
        if pr.state is not PullRequestState.OPEN:
            return pr
        head_sha = await repos.rev_parse(self._git, self.repo_path(pr.repo), pr.head)
        if head_sha is not None and head_sha != pr.head_sha:
            record.pr = pr = pr.model_copy(update={"head_sha": head_sha})
        return pr
