"""The PATH shim that enforces a worker's ``allowed_commands`` below the agent CLI.

A worker assigned ``allowed_commands`` gets two layers:

1. **The CLI's own permissions** (``AgentRequest.allowed_commands``) where the adapter
   has them: claude (``--allowedTools Bash(<cmd>:*)``), droid (``commandAllowlist``),
   opencode (per-session permission rules). codex, gemini and opencode-run refuse
   ``allowed_commands`` (``InvalidRequest``): for them the wrapper leaves the request's list
   empty, logs it, and relies on layer 2 alone.
2. **This shim**: a directory (``<agent HOME>/.codeyard/allowed-bin``) of symlinks to each
   allowed command (its first word, found with :func:`shutil.which` on the worker's own
   PATH when the assignment arrives) plus what the agent itself needs to run (``bash``,
   ``sh``, ``env``, the agent CLI, and ``node`` when the CLI is a node script), and the
   agent process gets ``PATH=<that directory>`` only: any other command is
   "command not found". The shim works per executable: ``"git status"`` links all of
   ``git``; narrowing arguments is layer 1's job. The directory is made read-only so a
   non-root agent cannot add entries to it (root ignores that). Measured with Claude Code
   2.1.330: its ``acceptEdits`` mode (used with an allowlist) runs ``touch`` in the workdir
   as a file edit without asking, and only the shim stops it.

How each provider gets that PATH (every spec builds a complete environment, see
``grep PATH src/adapters/*/spec.py``):

* **claude, codex, droid, gemini**: the spec's options have a ``path`` field
  (``ClaudeConfig.path``, ``CodexOptions.path``, ...), which becomes the CLI's ``PATH``;
  the worker builds the agent with ``AgentOptions(path=...)``. Their specs also let
  ``request.env`` override ``PATH``, so the wrapper pins ``PATH`` in every request's env
  too: a prompt's ``env`` cannot widen it.
* **opencode, opencode-run** (built by the provider registry, no options override):
  ``PATH`` through the request env only (``OpencodeConfig`` lets ``request.env`` override
  anything but ``HOME``), pinned the same way.
* The CLI executable itself is looked up on the child's ``PATH`` by the process launcher
  when it is a bare name, hence its link in the shim.

This is **defence in depth, not a boundary**: a process can still run any executable by
its absolute path (``/usr/bin/curl``), a shell's builtins stay available (``echo x > f``
writes files), and an allowed interpreter (``python``, ``node``) can run anything. A CLI
that shells out to helpers of its own needs them listed too. The real boundary is the
worker container (its image, user, network policy).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

#: What any agent CLI needs to run its shell tool, whatever the allowlist says.
AGENT_COMMANDS: tuple[str, ...] = ("bash", "sh", "env")
#: Where the shim lives, relative to the agent's HOME.
SHIM_DIR = Path(".codeyard") / "allowed-bin"


@dataclass(frozen=True)
class CommandShim:
    """A built shim: its directory, what it links (name -> target) and what was not found."""

    directory: Path
    linked: dict[str, str]
    missing: tuple[str, ...]

    @property
    def path(self) -> str:
        """The ``PATH`` value the agent process gets."""
        return str(self.directory)


def command_name(command: str) -> str:
    """The executable an ``allowed_commands`` entry names: ``"git status"`` -> ``"git"``,
    ``"/usr/bin/ls -l"`` -> ``"ls"`` (linked under its name, resolved by its path)."""
    try:
        words = shlex.split(command)
    except ValueError:  # an unbalanced quote: the first whitespace word is still the command
        words = command.split()
    return words[0] if words else ""


def _needs_node(executable: str) -> bool:
    """True when ``executable`` is a script run by node (``#!/usr/bin/env node``)."""
    with contextlib.suppress(OSError), open(executable, "rb") as handle:
        first = handle.readline(256)
        return first.startswith(b"#!") and b"node" in first
    return False


def build_shim(
    home: Path,
    allowed_commands: tuple[str, ...],
    *,
    agent_executable: str | None,
    search_path: str | None = None,
) -> CommandShim:
    """(Re)create ``home/.codeyard/allowed-bin`` for ``allowed_commands``; blocking I/O.

    ``search_path`` (default: this process's ``PATH``) is where commands are resolved.
    A command not found there is logged and left out: it could not run anyway.
    """
    search = search_path if search_path is not None else os.environ.get("PATH", os.defpath)
    directory = home / SHIM_DIR
    if directory.exists():
        directory.chmod(0o755)  # read-only from the previous build
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    wanted: list[str] = [command_name(c) for c in allowed_commands]
    wanted += AGENT_COMMANDS
    if agent_executable:
        wanted.append(agent_executable)
    linked: dict[str, str] = {}
    missing: list[str] = []
    for name in dict.fromkeys(w for w in wanted if w):
        target = shutil.which(name, path=search)
        if target is None:
            missing.append(name)
            continue
        link = Path(name).name
        if link in linked:
            continue
        target = os.path.abspath(target)
        (directory / link).symlink_to(target)
        linked[link] = target
        if _needs_node(target) and "node" not in linked:
            node = shutil.which("node", path=search)
            if node is not None:
                (directory / "node").symlink_to(os.path.abspath(node))
                linked["node"] = os.path.abspath(node)
    directory.chmod(0o555)
    if missing:
        log.warning("command shim: not found, left out", missing=missing, path=search)
    return CommandShim(directory=directory, linked=linked, missing=tuple(missing))
