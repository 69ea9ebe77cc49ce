"""The few argv forms :class:`InMemoryContainerRuntime` pretends to run.

Nothing here executes anything: each supported command is a Python function that computes
what the real program would print. Supported, with busybox-like output:

* ``echo [-n] WORD...``, ``true``, ``false``, ``pwd``, ``env`` (no arguments)
* ``cat FILE...`` reading the container's in-memory files
* ``sleep SECONDS`` (``infinity`` too): reported as a duration, the caller waits it out
* ``sh -c SCRIPT``: one simple command, optionally ending in ``> FILE``, ``>> FILE`` or
  ``>&2``; the builtin ``exit [N]``; nested ``sh -c``. ``sh`` alone reads an empty stdin
  and exits 0.

Anything else (unknown programs, pipes, ``;``, ``&&``, ``$VAR``, globs...) is refused the
way a shell refuses a missing program: exit code 127 and ``...: not found`` on stderr.
"""

from __future__ import annotations

import math
import posixpath
import shlex
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

NOT_FOUND = 127


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    stdout: str = ""
    stderr: str = ""
    #: How long the "process" runs before it ends (``math.inf``: until killed).
    duration_s: float = 0.0


@dataclass
class Context:
    files: MutableMapping[str, str]
    env: Mapping[str, str]
    workdir: str = "/"

    def path(self, name: str) -> str:
        return posixpath.normpath(posixpath.join(self.workdir, name))


def run(argv: Sequence[str], ctx: Context) -> Outcome:
    """Interpret ``argv`` against ``ctx`` (whose ``files`` redirections may change)."""
    if not argv:
        return Outcome(NOT_FOUND, stderr="sh: : not found\n")
    command = _COMMANDS.get(argv[0])
    if command is None:
        return Outcome(NOT_FOUND, stderr=f"sh: {argv[0]}: not found\n")
    return command(list(argv[1:]), ctx)


def _echo(args: list[str], ctx: Context) -> Outcome:
    newline = "\n"
    if args[:1] == ["-n"]:
        args, newline = args[1:], ""
    return Outcome(0, stdout=" ".join(args) + newline)


def _true(args: list[str], ctx: Context) -> Outcome:
    return Outcome(0)


def _false(args: list[str], ctx: Context) -> Outcome:
    return Outcome(1)


def _pwd(args: list[str], ctx: Context) -> Outcome:
    return Outcome(0, stdout=ctx.workdir + "\n")


def _env(args: list[str], ctx: Context) -> Outcome:
    if args:  # env NAME=VALUE COMMAND...: not modelled
        return Outcome(NOT_FOUND, stderr=f"env: {args[0]}: not found (not modelled in memory)\n")
    return Outcome(0, stdout="".join(f"{k}={v}\n" for k, v in ctx.env.items()))


def _cat(args: list[str], ctx: Context) -> Outcome:
    out, err, code = [], [], 0
    for name in args:
        content = ctx.files.get(ctx.path(name))
        if content is None:
            err.append(f"cat: can't open '{name}': No such file or directory\n")
            code = 1
        else:
            out.append(content)
    return Outcome(code, stdout="".join(out), stderr="".join(err))


def _sleep(args: list[str], ctx: Context) -> Outcome:
    if len(args) != 1:
        return Outcome(1, stderr="sleep: usage: sleep SECONDS\n")
    try:
        seconds = math.inf if args[0] == "infinity" else float(args[0])
    except ValueError:
        return Outcome(1, stderr=f"sleep: invalid number '{args[0]}'\n")
    return Outcome(0, duration_s=max(seconds, 0.0))


def _sh(args: list[str], ctx: Context) -> Outcome:
    if not args:
        return Outcome(0)  # no -c: reads the (empty) stdin and ends
    if args[0] != "-c" or len(args) < 2:
        return Outcome(NOT_FOUND, stderr=f"sh: {args[0]}: not found\n")
    script = args[1]
    words = _split(script)
    if words is None:
        return Outcome(NOT_FOUND, stderr=f"sh: {script}: not found (not modelled in memory)\n")
    redirect: tuple[str, str] | None = None
    if len(words) >= 2 and words[-2] in (">", ">>"):
        redirect, words = (words[-2], words[-1]), words[:-2]
    elif words[-1:] == [">&2"]:
        redirect, words = (">&2", ""), words[:-1]
    if any(w in _OPERATORS for w in words):
        return Outcome(NOT_FOUND, stderr=f"sh: {script}: not found (not modelled in memory)\n")
    if not words:
        return Outcome(0)
    if words[0] == "exit":
        try:
            return Outcome(int(words[1]) % 256 if len(words) > 1 else 0)
        except ValueError:
            return Outcome(2, stderr=f"sh: exit: Illegal number: {words[1]}\n")
    outcome = run(words, ctx)
    if redirect is None:
        return outcome
    op, target = redirect
    if op == ">&2":
        return Outcome(outcome.exit_code, "", outcome.stderr + outcome.stdout, outcome.duration_s)
    path = ctx.path(target)
    ctx.files[path] = (ctx.files.get(path, "") if op == ">>" else "") + outcome.stdout
    return Outcome(outcome.exit_code, "", outcome.stderr, outcome.duration_s)


_OPERATORS = frozenset({";", "&", "&&", "|", "||", "<", ">", ">>", ">&", "(", ")"})


def _split(script: str) -> list[str] | None:
    """Words of a simple command, ``None`` for anything needing a real shell."""
    if any(c in script for c in "$`*?[~\\\n"):
        return None
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:  # unbalanced quotes
        return None
    # punctuation_chars splits ">&2" into ">&" and "2": glue it back.
    if words[-2:] == [">&", "2"]:
        words = [*words[:-2], ">&2"]
    return words


_COMMANDS: dict[str, Callable[[list[str], Context], Outcome]] = {
    "echo": _echo,
    "true": _true,
    "false": _false,
    "pwd": _pwd,
    "env": _env,
    "cat": _cat,
    "sleep": _sleep,
    "sh": _sh,
}
