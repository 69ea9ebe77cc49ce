"""The repository of ``codeyard run``: in through a private forge, out as local branches.

In: the ``base`` branch of the user's repository is cloned bare into a :class:`LocalForge`
in a temp dir and served over git smart HTTP (all interfaces, a random token) so worker
containers clone and push there, never to the user's repository.

Out: after the run, every task branch the forge holds is fetched into the user's
repository as ``codeyard/<task id>`` and the forge's base (everything merged) as
``codeyard/merged``. Only refs under ``refs/heads/codeyard/`` change: the working tree,
the index and the current branch are never touched (git refuses to fetch into the branch
that is checked out, which is reported rather than forced).
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio

from codeyard.adapters.forge import ForgeServer, LocalForge
from codeyard.adapters.memory.clock import SystemClock
from codeyard.domain.errors import InvalidInput
from codeyard.domain.task_run import RepoTarget

#: The forge repository's name (one repository per run).
REPO_NAME = "repo"
#: The worker-side variable git's credential helper reads the forge token from.
TOKEN_ENV = "CODEYARD_GIT_TOKEN"
MERGED_BRANCH = "codeyard/merged"
_CONTAINER_HOST = "host.docker.internal"


class RepositoryError(InvalidInput):
    """The user's repository cannot be used (not a git repository, no such branch) or the
    results cannot be fetched back into it."""

    code = "repository_error"


@dataclass(frozen=True)
class ServedRepo:
    """The user's repository as the run sees it (see the module docstring)."""

    path: Path
    base: str
    server: ForgeServer
    token: str

    @property
    def forge(self) -> LocalForge:
        return self.server.forge

    @property
    def bare(self) -> Path:
        return self.forge.repo_path(REPO_NAME)

    @property
    def target(self) -> RepoTarget:
        """The repository as the task runner and the workers see it."""
        return RepoTarget(
            name=REPO_NAME,
            clone_url=self.server.repo_url(REPO_NAME, host=_CONTAINER_HOST),
            base=self.base,
            token_env=TOKEN_ENV,
        )

    @property
    def port(self) -> int:
        return self.server.port


async def _git(*args: str, cwd: Path | None = None) -> str:
    """``git args`` (stdout); :class:`RepositoryError` with git's message on failure."""
    try:
        done = await anyio.run_process(["git", *args], cwd=cwd, check=False)
    except OSError as exc:
        raise RepositoryError("git cannot be run (is it installed?)", error=str(exc)) from exc
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or "git failed"
        raise RepositoryError(message, command=" ".join(["git", *args[:2]]))
    return done.stdout.decode(errors="replace")


async def check_repository(path: Path, base: str) -> Path:
    """``path`` resolved, when it is a git repository with a branch ``base``."""
    resolved = Path(await (await anyio.Path(path).expanduser()).resolve())
    if not await anyio.Path(resolved).is_dir():
        raise RepositoryError(f"{path} is not a directory", repo=str(path))
    try:
        await _git("rev-parse", "--git-dir", cwd=resolved)
    except RepositoryError as exc:
        raise RepositoryError(f"{path} is not a git repository", repo=str(path)) from exc
    try:
        await _git(
            "rev-parse", "--verify", "--quiet", f"refs/heads/{base}^{{commit}}", cwd=resolved
        )
    except RepositoryError as exc:
        msg = f"{path} has no branch {base!r} (choose one with --base)"
        raise RepositoryError(msg, repo=str(path), base=base) from exc
    return resolved


@asynccontextmanager
async def serve_repository(path: Path, base: str) -> AsyncIterator[ServedRepo]:
    """Seed a forge in a temp dir with ``path``'s ``base`` and serve it until the block
    ends (the temp dir goes with it)."""
    resolved = await check_repository(path, base)
    with tempfile.TemporaryDirectory(prefix="codeyard-run-forge-") as root:
        forge = LocalForge(Path(root), clock=SystemClock())
        bare = forge.repo_path(REPO_NAME)
        await _git(
            "clone", "--bare", "--quiet", "--single-branch", "--branch", base,
            "--no-tags", str(resolved), str(bare),
        )  # fmt: skip
        token = secrets.token_hex(16)
        # All interfaces: worker containers clone and push through the host gateway.
        async with ForgeServer(forge, host="0.0.0.0", token=token) as server:
            yield ServedRepo(resolved, base, server, token)


async def forge_branches(bare: Path) -> list[str]:
    """The ``codeyard/*`` branches of the bare repository ``bare``."""
    out = await _git(
        "--git-dir", str(bare), "for-each-ref", "--format=%(refname:short)", "refs/heads/codeyard/"
    )
    return [line for line in out.splitlines() if line]


def fetch_refspecs(task_branches: Sequence[str], base: str) -> list[str]:
    """Forced refspecs bringing ``task_branches`` and ``base`` (as ``codeyard/merged``) home.

    Forced: task ids repeat between runs (``t-1``...), so a branch of an earlier run is
    replaced, not merged with; only codeyard's own ``refs/heads/codeyard/`` is written.
    """
    specs = [f"+refs/heads/{b}:refs/heads/{b}" for b in task_branches]
    specs.append(f"+refs/heads/{base}:refs/heads/{MERGED_BRANCH}")
    return specs


async def fetch_results(served: ServedRepo) -> dict[str, str]:
    """Fetch the results into the user's repository (see the module docstring).

    Returns ``{branch in the user's repository: commit}`` for every branch written.
    """
    branches = [b for b in await forge_branches(served.bare) if b != MERGED_BRANCH]
    specs = fetch_refspecs(branches, served.base)
    await _git("fetch", "--quiet", "--no-tags", str(served.bare), *specs, cwd=served.path)
    written = [*branches, MERGED_BRANCH]
    shas = await _git("rev-parse", *(f"refs/heads/{b}" for b in written), cwd=served.path)
    return dict(zip(written, shas.split(), strict=True))
