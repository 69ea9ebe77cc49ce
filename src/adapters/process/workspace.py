"""Workspaces of the local runtime: a plain directory, or a git worktree of a repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import anyio.to_thread

from codeyard.domain.errors import InvalidRequest


async def make_workspace(path: Path, repo: Path | None) -> None:
    """Create ``path``: empty, or a detached worktree of ``repo``'s HEAD (shares its
    objects: no copy of the history)."""
    if repo is None:
        await anyio.Path(path).mkdir()
        return
    argv = ["git", "-C", str(repo), "worktree", "add", "--detach", "--quiet", str(path)]
    result = await anyio.run_process(argv, check=False)
    if result.returncode != 0:
        raise InvalidRequest(
            "cannot make a git worktree",
            errors=[{"loc": "repo", "msg": result.stderr.decode(errors="replace").strip()}],
        )


async def drop_workspace(root: Path, workspace: Path, repo: Path | None) -> None:
    """Delete ``root`` (holding ``workspace``), unregistering the worktree from ``repo``."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(30):
        if repo is not None:
            argv = ["git", "-C", str(repo), "worktree", "remove", "--force", str(workspace)]
            await anyio.run_process(argv, check=False)
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(root, ignore_errors=True))
        if repo is not None:  # a worktree deleted by hand (or half made) leaves a record
            await anyio.run_process(["git", "-C", str(repo), "worktree", "prune"], check=False)
