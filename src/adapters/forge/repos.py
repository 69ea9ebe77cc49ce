"""Operations on the forge's bare repositories, through the ``git`` CLI.

Reads (``rev_parse``, ``diff``, ``show_file``) run against the bare repository itself.
Writes that need a working tree (the seed commit, :func:`commit_files`, merges) run in a
throw-away clone under the forge's scratch directory and reach the bare repository by a
plain, non-forced ``git push``: git's own ref locking then makes every update a
compare-and-swap, whoever else (a worker over HTTP, another merge) pushes at the same time.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path, PurePosixPath

import anyio

from codeyard.adapters.forge.git import Git
from codeyard.domain.errors import InvalidRequest

#: A commit SHA as ``resolve`` accepts it (abbreviated from 7 hex digits).
_SHA_RE = re.compile(r"^[0-9a-f]{7,64}$")
#: A file to write (its text) or to delete (None).
FileChanges = Mapping[str, str | None]


@asynccontextmanager
async def scratch_dir(parent: Path) -> AsyncIterator[Path]:
    """A fresh directory under ``parent``, removed afterwards (even when cancelled)."""

    def make() -> str:
        parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(dir=parent)

    path = Path(await anyio.to_thread.run_sync(make))
    try:
        yield path
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(30):
            await anyio.to_thread.run_sync(lambda: shutil.rmtree(path, ignore_errors=True))


def _checked_path(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or path.parts[:1] == (".git",):
        raise InvalidRequest(
            "a file path must be relative and stay inside the repository", path=name
        )
    return path


def _write_files(work: Path, files: FileChanges) -> None:
    for name, text in files.items():
        target = work / _checked_path(name)
        if text is None:
            target.unlink(missing_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


async def rev_parse(git: Git, bare: Path, branch: str) -> str | None:
    """The commit ``branch`` points at in ``bare``, or None when it has no such branch."""
    result = await git.run(
        f"--git-dir={bare}", "rev-parse", "--quiet", "--verify",
        f"refs/heads/{branch}^{{commit}}", check=False,
    )  # fmt: skip
    sha = result.stdout.strip()
    return sha if result.ok and sha else None


async def resolve(git: Git, bare: Path, rev: str) -> str | None:
    """The commit of branch ``rev``, else of commit SHA ``rev`` (full or abbreviated), in
    ``bare``; None when it has neither. Nothing else (tags, ``HEAD~1``) is looked up."""
    sha = await rev_parse(git, bare, rev)
    if sha is not None or not _SHA_RE.match(rev):
        return sha
    result = await git.run(
        f"--git-dir={bare}", "rev-parse", "--quiet", "--verify", f"{rev}^{{commit}}", check=False
    )
    found = result.stdout.strip()
    return found if result.ok and found else None


async def rev_list(git: Git, bare: Path, base: str, head: str) -> list[str]:
    """``git rev-list --reverse base..head``: the commits ``head`` has over ``base``,
    oldest first (both resolved SHAs)."""
    result = await git.run(f"--git-dir={bare}", "rev-list", "--reverse", f"{base}..{head}")
    return result.stdout.split()


async def diff(git: Git, bare: Path, base: str, head: str) -> str:
    """``git diff base...head``: what ``head`` changes since its merge base with ``base``."""
    result = await git.run(f"--git-dir={bare}", "diff", "--no-color", f"{base}...{head}")
    return result.stdout


async def show_file(git: Git, bare: Path, branch: str, path: str) -> str | None:
    """The text of ``path`` on ``branch``, or None when either does not exist."""
    spec = f"refs/heads/{branch}:{_checked_path(path)}"
    result = await git.run(f"--git-dir={bare}", "show", spec, check=False)
    return result.stdout if result.ok else None


async def create_bare(
    git: Git, bare: Path, scratch: Path, *, files: FileChanges, default_branch: str
) -> str:
    """Initialise ``bare`` with one commit on ``default_branch`` holding ``files``; returns
    its sha."""
    await git.run("init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(bare))
    async with scratch_dir(scratch) as tmp:
        work = tmp / "work"
        await git.run("init", "--quiet", f"--initial-branch={default_branch}", str(work))
        await anyio.to_thread.run_sync(_write_files, work, files)
        await git.run("add", "--all", cwd=work)
        await git.run("commit", "--quiet", "--allow-empty", "-m", "Initial commit", cwd=work)
        await git.run("push", "--quiet", str(bare), f"HEAD:refs/heads/{default_branch}",
                      cwd=work)  # fmt: skip
        return (await git.run("rev-parse", "HEAD", cwd=work)).stdout.strip()


async def clone(git: Git, bare: Path, work: Path, branch: str) -> None:
    """A working clone of ``bare`` with ``branch`` checked out (all branches fetched)."""
    await git.run("clone", "--quiet", "--no-tags", "--branch", branch, str(bare), str(work))


async def commit_files(
    git: Git, bare: Path, scratch: Path, *, branch: str, base: str, files: FileChanges,
    message: str,
) -> str:  # fmt: skip
    """Commit ``files`` on ``branch`` (created from ``base`` when missing) and push it;
    returns the new commit. Fails with ``GitFailed`` when the branch moved meanwhile."""
    start = branch if await rev_parse(git, bare, branch) is not None else base
    async with scratch_dir(scratch) as tmp:
        work = tmp / "work"
        await clone(git, bare, work, start)
        if start != branch:
            await git.run("checkout", "--quiet", "-b", branch, cwd=work)
        await anyio.to_thread.run_sync(_write_files, work, files)
        await git.run("add", "--all", cwd=work)
        await git.run("commit", "--quiet", "--allow-empty", "-F", "-", cwd=work, input=message)
        await git.run("push", "--quiet", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
        return (await git.run("rev-parse", "HEAD", cwd=work)).stdout.strip()


async def conflicted_files(git: Git, work: Path) -> list[str]:
    """Paths left unmerged in ``work`` after a failed merge or rebase, sorted."""
    result = await git.run("diff", "--name-only", "--diff-filter=U", cwd=work, check=False)
    return sorted({line for line in result.stdout.splitlines() if line})
