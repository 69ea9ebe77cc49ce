"""LocalForge beyond the CodeHost contract: repository names, the merge methods, a base
that moves during a merge, and isolation from the host's git configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeyard.adapters.forge import LocalForge
from codeyard.adapters.forge.git import Git, GitResult
from codeyard.adapters.forge.merge import merge_into_base
from codeyard.adapters.memory.clock import ManualClock
from codeyard.domain.code_host import CodeHostUnavailable, MergeMethod, PullRequestState
from codeyard.domain.errors import AlreadyExists, InvalidRequest

pytestmark = pytest.mark.anyio


@pytest.fixture
async def forge(tmp_path: Path) -> LocalForge:
    forge = LocalForge(tmp_path / "forge", clock=ManualClock())
    await forge.create_repo("repo", files={"a.txt": "a\n", "b.txt": "b\n"})
    return forge


async def test_repository_names(forge: LocalForge) -> None:
    with pytest.raises(AlreadyExists):
        await forge.create_repo("repo")
    for bad in ("../escape", ".forge", "owner/.hidden", "a b"):
        with pytest.raises(InvalidRequest):
            forge.repo_path(bad)
    path = await forge.create_repo("owner/named", files={"x": "1\n"}, default_branch="trunk")
    assert path == forge.root / "owner" / "named.git"
    assert await forge.read_file("owner/named", "trunk", "x") == "1\n"
    assert await forge.branch_sha("owner/named", "main") is None


@pytest.mark.parametrize("method", [MergeMethod.MERGE, MergeMethod.REBASE])
async def test_merge_and_rebase_methods(forge: LocalForge, method: MergeMethod) -> None:
    await forge.commit_files("repo", "task/m", {"a.txt": "A\n"})
    await forge.commit_files("repo", "task/m", {"c.txt": "c\n"})
    await forge.commit_files("repo", "main", {"b.txt": "B\n"})
    pr = await forge.open_pull_request("repo", head="task/m", base="main", title="M")
    merged = await forge.merge("repo", pr.number, method=method)
    assert merged.state is PullRequestState.MERGED
    assert await forge.branch_sha("repo", "main") == merged.merge_sha
    for name, text in {"a.txt": "A\n", "b.txt": "B\n", "c.txt": "c\n"}.items():
        assert await forge.read_file("repo", "main", name) == text


class _MovingBase(Git):
    """A Git whose merge pushes find the base moved first, ``moves`` times."""

    def __init__(self, home: Path, forge: LocalForge, moves: int) -> None:
        super().__init__(home)
        self.forge = forge
        self.moves = moves
        self.pushes = 0

    async def run(
        self, *args: str, cwd: Path | None = None, input: str | None = None, check: bool = True
    ) -> GitResult:
        if args[:1] == ("push",) and args[-1] == "HEAD:refs/heads/main" and self.moves:
            self.moves -= 1
            self.pushes += 1
            await self.forge.commit_files("repo", "main", {f"mover-{self.pushes}": "x\n"})
        return await super().run(*args, cwd=cwd, input=input, check=check)


async def test_merge_retries_when_the_base_moves(forge: LocalForge, tmp_path: Path) -> None:
    head_sha = await forge.commit_files("repo", "task/r", {"a.txt": "R\n"})
    git = _MovingBase(forge.git_home, forge, moves=1)
    tip = await merge_into_base(
        git, forge.repo_path("repo"), tmp_path / "scratch", base="main", head_sha=head_sha,
        method=MergeMethod.SQUASH, message="R",
    )  # fmt: skip
    assert await forge.branch_sha("repo", "main") == tip
    assert await forge.read_file("repo", "main", "a.txt") == "R\n"
    assert await forge.read_file("repo", "main", "mover-1") == "x\n"


async def test_merge_gives_up_when_the_base_keeps_moving(forge: LocalForge, tmp_path: Path) -> None:
    head_sha = await forge.commit_files("repo", "task/r", {"a.txt": "R\n"})
    git = _MovingBase(forge.git_home, forge, moves=5)
    with pytest.raises(CodeHostUnavailable) as caught:
        await merge_into_base(
            git, forge.repo_path("repo"), tmp_path / "scratch", base="main", head_sha=head_sha,
            method=MergeMethod.SQUASH, message="R", attempts=2,
        )  # fmt: skip
    assert caught.value.retryable
    assert await forge.read_file("repo", "main", "a.txt") == "a\n"
    assert await forge.read_file("repo", "main", "mover-2") == "x\n"


async def test_host_git_config_does_not_interfere(
    forge: LocalForge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "host-home"
    home.mkdir()
    # A user config that would break unattended commits and merges if it applied.
    (home / ".gitconfig").write_text(
        "[commit]\n\tgpgsign = true\n[gpg]\n\tprogram = false\n"
        "[merge]\n\tff = only\n[core]\n\thooksPath = /nonexistent\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "not-a-repo"))
    await forge.commit_files("repo", "task/iso", {"b.txt": "iso\n"})
    pr = await forge.open_pull_request("repo", head="task/iso", base="main", title="Iso")
    merged = await forge.merge("repo", pr.number)
    assert merged.state is PullRequestState.MERGED
    assert await forge.read_file("repo", "main", "b.txt") == "iso\n"
