"""Running the ``git`` CLI for the local forge, isolated from the host's git setup.

Every command gets a fixed environment: no system config (``GIT_CONFIG_NOSYSTEM``), a
private ``HOME``/``XDG_CONFIG_HOME`` (so no user config, credential helper or hook path of
the host applies), a fixed author and committer, no terminal prompts, the C locale (stable
messages), and none of the caller's ``GIT_*`` variables (a ``GIT_DIR`` inherited from a hook
would point every command at the wrong repository).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio

from codeyard.domain.code_host import GitFailed

#: How much of git's stderr an error keeps (the end: where git says what went wrong).
_STDERR_TAIL = 2000

FORGE_NAME = "codeyard forge"
FORGE_EMAIL = "forge@codeyard.localhost"


def git_env(
    home: Path,
    *,
    name: str = FORGE_NAME,
    email: str = FORGE_EMAIL,
    config: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment for a forge git process; ``config`` adds ``-c``-like settings that
    also reach git subprocesses (through ``GIT_CONFIG_COUNT``/``KEY_n``/``VALUE_n``)."""
    settings = {
        # Repositories under the forge root may be owned by another user (a root test
        # runner, a mounted volume): the forge trusts its own root.
        "safe.directory": "*",
        **(config or {}),
    }
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "LC_ALL": "C",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
        "GIT_CONFIG_COUNT": str(len(settings)),
    }
    for index, (key, value) in enumerate(settings.items()):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class Git:
    """Runs ``git`` with :func:`git_env` (``home`` is created on first use)."""

    def __init__(self, home: Path, *, name: str = FORGE_NAME, email: str = FORGE_EMAIL) -> None:
        self.home = home
        self.env = git_env(home, name=name, email=email)

    async def run(
        self,
        *args: str,
        cwd: Path | None = None,
        input: str | None = None,
        check: bool = True,
    ) -> GitResult:
        """Run ``git ARGS``; with ``check`` a non-zero exit raises :class:`GitFailed`
        (``step`` = the git subcommand, ``returncode``, the end of ``stderr``).

        Cancelled, the process is killed (anyio's process context does it) before this
        returns.
        """
        await anyio.Path(self.home).mkdir(parents=True, exist_ok=True)
        try:
            done = await anyio.run_process(
                ["git", *args],
                input=input.encode() if input is not None else None,
                stdin=None if input is not None else subprocess.DEVNULL,
                cwd=cwd,
                env=self.env,
                check=False,
            )
        except OSError as exc:
            msg = "cannot run git"
            raise GitFailed(msg, step=_step(args), stderr=str(exc)) from exc
        result = GitResult(
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )
        if check and not result.ok:
            msg = f"git {_step(args)} failed"
            raise GitFailed(
                msg,
                step=_step(args),
                returncode=result.returncode,
                stderr=result.stderr[-_STDERR_TAIL:],
            )
        return result


def _step(args: tuple[str, ...]) -> str:
    """The subcommand of a git argv (skipping global options such as ``--git-dir=X``)."""
    for arg in args:
        if not arg.startswith("-"):
            return arg
    return "git"
