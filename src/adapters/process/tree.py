"""Which processes belong to a run: its process group plus every descendant.

Killing the process group is not always enough: some CLIs start their tools in a session
(and group) of their own — Claude Code runs each Bash tool command under ``setsid`` — so
those tools escape ``killpg``. While their parent lives, they are still its descendants.
This module computes "the group plus the descendants of its members" from ``/proc/*/stat``
lines (pure functions, so the Docker launcher can feed it the lines of a container).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    state: str
    #: Start time in clock ticks since boot: with the pid, it names one process for good
    #: (a pid alone may be reused once its process is reaped).
    start: int

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def parse_stat(line: str) -> Proc | None:
    """One ``/proc/PID/stat`` line, or ``None`` if it is not one."""
    # "pid (comm) state ppid pgrp session tty tpgid flags ... starttime(22nd)": comm may
    # hold spaces and parentheses, so split after its LAST ")".
    head, sep, rest = line.rpartition(")")
    if not sep:
        return None
    fields = rest.split()
    try:
        return Proc(
            pid=int(head.split("(", 1)[0]),
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            state=fields[0],
            start=int(fields[19]),
        )
    except (ValueError, IndexError):
        return None


def table(lines: Iterable[str]) -> dict[int, Proc]:
    procs = (parse_stat(line) for line in lines)
    return {proc.pid: proc for proc in procs if proc is not None}


def run_members(
    procs: Mapping[int, Proc], pgid: int, roots: Iterable[int] = (), exclude: Iterable[int] = ()
) -> set[int]:
    """Members of group ``pgid`` plus all descendants of them and of ``roots``, minus
    ``exclude`` (the caller itself: it must never kill its own process)."""
    children: dict[int, list[int]] = defaultdict(list)
    for proc in procs.values():
        children[proc.ppid].append(proc.pid)
    found = {pid for pid, proc in procs.items() if proc.pgid == pgid}
    stack = [*found, *(pid for pid in roots if pid in procs)]
    found.update(pid for pid in roots if pid in procs)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found - set(exclude)
