"""The CodeHost contract (src/ports/code_host.py), checked against every adapter.

One suite, parametrized over ``harness``: a code host plus the few moves a test needs that
the port does not offer (a fresh repository, pushing a branch as a worker would, reading a
branch back). To add an adapter, write a factory like :func:`_forge_harness` and list it in
``HARNESSES``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Protocol

import anyio
import pytest

from codeyard.adapters.forge import LocalForge
from codeyard.adapters.memory.clock import ManualClock
from codeyard.domain.code_host import (
    MergeConflict,
    PullRequestClosed,
    PullRequestNotFound,
    PullRequestState,
    RepositoryNotFound,
)
from codeyard.domain.errors import InvalidRequest
from codeyard.ports.code_host import CodeHost

pytestmark = pytest.mark.anyio

SEED = {"README.md": "# sample\n", "src/app.py": "VALUE = 1\n", "src/util.py": "X = 1\n"}


class Harness(Protocol):
    host: CodeHost
    #: A fresh repository seeded with ``SEED`` on ``main``.
    repo: str

    async def push(self, branch: str, files: Mapping[str, str], *, base: str = "main") -> str:
        """Commit ``files`` on ``branch`` (from ``base`` when new), push; the new sha."""
        ...

    async def read(self, branch: str, path: str) -> str | None: ...

    async def sha(self, branch: str) -> str | None: ...


class _ForgeHarness:
    def __init__(self, forge: LocalForge, repo: str) -> None:
        self.host: CodeHost = forge
        self.forge = forge
        self.repo = repo

    async def push(self, branch: str, files: Mapping[str, str], *, base: str = "main") -> str:
        return await self.forge.commit_files(self.repo, branch, files, base=base)

    async def read(self, branch: str, path: str) -> str | None:
        return await self.forge.read_file(self.repo, branch, path)

    async def sha(self, branch: str) -> str | None:
        return await self.forge.branch_sha(self.repo, branch)


_names = itertools.count(1)


@asynccontextmanager
async def _forge_harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    forge = LocalForge(tmp_path / "forge", clock=ManualClock())
    repo = f"sample-{next(_names)}"
    await forge.create_repo(repo, files=SEED)
    yield _ForgeHarness(forge, repo)


HARNESSES: dict[str, Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[Harness]]] = {
    "forge": _forge_harness,
}


@pytest.fixture(params=list(HARNESSES))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with HARNESSES[request.param](request) as value:
        yield value


async def test_is_a_code_host(harness: Harness) -> None:
    assert isinstance(harness.host, CodeHost)


async def test_open_get_diff_comment_and_squash_merge(harness: Harness) -> None:
    host, repo = harness.host, harness.repo
    head_sha = await harness.push("task/one", {"src/app.py": "VALUE = 2\n", "new.txt": "hi\n"})
    await harness.push("task/one", {"more.txt": "second commit\n"})
    head_sha = await harness.sha("task/one") or head_sha

    pr = await host.open_pull_request(repo, head="task/one", base="main", title="Bump", body="b")
    assert (pr.repo, pr.head, pr.base, pr.title, pr.body) == (repo, "task/one", "main", "Bump", "b")
    assert pr.state is PullRequestState.OPEN
    assert pr.head_sha == head_sha
    got = await host.get_pull_request(repo, pr.number)
    assert (got.number, got.head_sha, got.state) == (pr.number, head_sha, PullRequestState.OPEN)

    diff = await host.diff(repo, pr.number)
    assert "-VALUE = 1" in diff
    assert "+VALUE = 2" in diff
    assert "+++ b/new.txt" in diff
    assert "+++ b/more.txt" in diff
    assert "README.md" not in diff

    await host.comment(repo, pr.number, "first")
    await host.comment(repo, pr.number, "second")
    assert await host.comments(repo, pr.number) == ["first", "second"]

    base_before = await harness.sha("main")
    merged = await host.merge(repo, pr.number)
    assert merged.state is PullRequestState.MERGED
    assert merged.merge_sha is not None
    assert merged.merge_sha != head_sha
    assert await harness.sha("main") == merged.merge_sha != base_before
    assert await harness.read("main", "src/app.py") == "VALUE = 2\n"
    assert await harness.read("main", "more.txt") == "second commit\n"
    again = await host.get_pull_request(repo, pr.number)
    assert (again.state, again.merge_sha) == (PullRequestState.MERGED, merged.merge_sha)


async def test_open_is_idempotent_while_open(harness: Harness) -> None:
    await harness.push("task/idem", {"a.txt": "a\n"})
    first = await harness.host.open_pull_request(
        harness.repo, head="task/idem", base="main", title="A"
    )
    second = await harness.host.open_pull_request(
        harness.repo, head="task/idem", base="main", title="A again"
    )
    assert second.number == first.number
    assert second.title == "A"


async def test_concurrent_opens_make_one_pull_request(harness: Harness) -> None:
    await harness.push("task/race", {"r.txt": "r\n"})
    numbers: list[int] = []

    async def open_one() -> None:
        pr = await harness.host.open_pull_request(
            harness.repo, head="task/race", base="main", title="R"
        )
        numbers.append(pr.number)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(open_one)
    assert len(numbers) == 3
    assert len(set(numbers)) == 1


async def test_unknown_repository(harness: Harness) -> None:
    with pytest.raises(RepositoryNotFound):
        await harness.host.open_pull_request(
            "no-such-repo-here", head="task/x", base="main", title="x"
        )
    with pytest.raises(RepositoryNotFound):
        await harness.host.get_pull_request("no-such-repo-here", 1)


async def test_unknown_head_branch_is_invalid(harness: Harness) -> None:
    with pytest.raises(InvalidRequest):
        await harness.host.open_pull_request(
            harness.repo, head="task/never-pushed", base="main", title="x"
        )


async def test_unknown_pull_request(harness: Harness) -> None:
    with pytest.raises(PullRequestNotFound):
        await harness.host.get_pull_request(harness.repo, 999)
    with pytest.raises(PullRequestNotFound):
        await harness.host.merge(harness.repo, 999)


async def test_merging_twice_raises_closed(harness: Harness) -> None:
    await harness.push("task/twice", {"t.txt": "t\n"})
    pr = await harness.host.open_pull_request(
        harness.repo, head="task/twice", base="main", title="T"
    )
    await harness.host.merge(harness.repo, pr.number)
    with pytest.raises(PullRequestClosed):
        await harness.host.merge(harness.repo, pr.number)


async def test_conflicting_merge_leaves_base_untouched(harness: Harness) -> None:
    host, repo = harness.host, harness.repo
    await harness.push("task/left", {"src/app.py": "VALUE = 'left'\n"})
    await harness.push("task/right", {"src/app.py": "VALUE = 'right'\n"})
    left = await host.open_pull_request(repo, head="task/left", base="main", title="L")
    right = await host.open_pull_request(repo, head="task/right", base="main", title="R")
    await host.merge(repo, left.number)
    base_after_left = await harness.sha("main")

    with pytest.raises(MergeConflict) as caught:
        await host.merge(repo, right.number)
    assert caught.value.fields["files"] == ["src/app.py"]
    assert await harness.sha("main") == base_after_left
    assert await harness.read("main", "src/app.py") == "VALUE = 'left'\n"
    still = await host.get_pull_request(repo, right.number)
    assert still.state is PullRequestState.OPEN


async def test_independent_pull_requests_both_merge(harness: Harness) -> None:
    host, repo = harness.host, harness.repo
    await harness.push("task/app", {"src/app.py": "VALUE = 3\n"})
    await harness.push("task/util", {"src/util.py": "X = 3\n"})
    app = await host.open_pull_request(repo, head="task/app", base="main", title="app")
    util = await host.open_pull_request(repo, head="task/util", base="main", title="util")
    assert app.number != util.number

    merged = []

    async def merge(number: int) -> None:
        merged.append(await host.merge(repo, number))

    # Concurrent on purpose: merges into one base must serialize, not lose either change.
    async with anyio.create_task_group() as tg:
        tg.start_soon(merge, app.number)
        tg.start_soon(merge, util.number)
    assert {pr.state for pr in merged} == {PullRequestState.MERGED}
    assert await harness.read("main", "src/app.py") == "VALUE = 3\n"
    assert await harness.read("main", "src/util.py") == "X = 3\n"
    assert await harness.read("main", "README.md") == SEED["README.md"]


async def test_branch_commits_over_the_base_oldest_first(harness: Harness) -> None:
    host, repo = harness.host, harness.repo
    base_sha = await harness.sha("main")
    assert base_sha is not None
    first = await harness.push("task/commits", {"c1.txt": "1\n"})
    second = await harness.push("task/commits", {"c2.txt": "2\n"})
    assert await host.branch_commits(repo, head="task/commits", base="main") == [first, second]
    # SHAs work as well as branch names; a head with nothing over its base lists nothing.
    assert await host.branch_commits(repo, head=first, base=base_sha) == [first]
    assert await host.branch_commits(repo, head="main", base="task/commits") == []
    # The base moving on (another PR merged) does not add its commits to the branch's.
    await harness.push("task/other", {"o.txt": "o\n"})
    other = await host.open_pull_request(repo, head="task/other", base="main", title="O")
    await host.merge(repo, other.number)
    assert await host.branch_commits(repo, head="task/commits", base="main") == [first, second]
    # A squash-merged pull request still lists its commits (by its head sha).
    pr = await host.open_pull_request(repo, head="task/commits", base="main", title="C")
    merged = await host.merge(repo, pr.number)
    assert merged.head_sha == second
    assert await host.branch_commits(repo, head=merged.head_sha, base=merged.base) == [
        first,
        second,
    ]


async def test_branch_commits_of_unknown_refs_and_repositories(harness: Harness) -> None:
    with pytest.raises(InvalidRequest):
        await harness.host.branch_commits(harness.repo, head="task/never-pushed", base="main")
    with pytest.raises(InvalidRequest):
        await harness.host.branch_commits(harness.repo, head="main", base="no-such-base")
    with pytest.raises(RepositoryNotFound):
        await harness.host.branch_commits("no-such-repo-here", head="task/x", base="main")
