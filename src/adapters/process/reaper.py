"""Orphan handling for process groups on Linux.

When an agent CLI dies, the tool processes it left behind are re-parented to the nearest
ancestor marked "child subreaper", else to PID 1. A proper init reaps them once killed;
some sandboxes run a PID 1 that never does, and a killed orphan then stays a zombie: dead,
harmless, but still a member of its process group (``killpg(pgid, 0)`` succeeds), which
makes "is anything of this run left?" unanswerable. :func:`become_subreaper` makes this
process adopt such orphans, and :func:`kill_run` kills a run's processes (its group and
the descendants of its members, see :mod:`.tree`) and reaps the adopted ones. Both do
nothing where ``/proc`` or ``prctl`` do not exist.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
from pathlib import Path

import anyio
import anyio.to_thread

from codeyard.adapters.process.tree import Proc, run_members, table

_PR_SET_CHILD_SUBREAPER = 36
_PROC = Path("/proc")
#: Environment variable a launcher sets, unique per started process, inherited by its tree.
MARKER_VAR = "CODEYARD_PROCESS_MARKER"


def become_subreaper() -> bool:
    """Mark this process a child subreaper (Linux ``prctl``); True when it worked."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def local_table() -> dict[int, Proc]:
    """This machine's process table (pid namespace) from ``/proc``."""
    lines: list[str] = []
    try:
        entries = list(_PROC.iterdir())
    except OSError:
        return {}
    for entry in entries:
        if entry.name.isdigit():
            try:
                lines.append((entry / "stat").read_text())
            except OSError:
                continue  # exited meanwhile
    return table(lines)


def marked_pids(marker: str) -> set[int]:
    """Pids whose environment carries ``MARKER_VAR=marker`` (unreadable ones are skipped)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    found: set[int] = set()
    try:
        entries = list(_PROC.iterdir())
    except OSError:
        return found
    for entry in entries:
        if entry.name.isdigit():
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue  # exited meanwhile, or not ours to read
            if needle in environ.split(b"\0"):
                found.add(int(entry.name))
    return found


async def kill_run(
    pgid: int, *, leader: int, settle_s: float = 2.0, marker: str | None = None
) -> None:
    """SIGKILL process group ``pgid`` and every descendant of its members (tools started
    in sessions of their own included), until nothing of it is alive or ``settle_s``
    passed; reap the zombies among them that are this process's children (adopted
    orphans), except ``leader``, which asyncio reaps.

    Descendants are found through parent links, so a tool is only found while its parent
    lives (or after it was adopted by this process as subreaper). ``leader`` is used as a
    root only while it is still this process's child: a reaped pid may be reused.
    """
    me = os.getpid()
    own_group = os.getpgrp()
    known: dict[int, int] = {}  # pid -> start time of every process targeted so far
    # Every process group seen among the run's processes. A tool forked between our
    # snapshot and the kill is missed by parent links once its parent dies (it is
    # re-parented to PID 1), but it stays in its parent's group: killing whole groups
    # catches it.
    groups: set[int] = {pgid}
    with anyio.move_on_after(settle_s):
        while True:
            procs = await anyio.to_thread.run_sync(local_table)
            roots = [pid for pid, start in known.items() if pid in procs
                     and procs[pid].start == start]  # fmt: skip
            if leader in procs and procs[leader].ppid == me:
                roots.append(leader)
            members = run_members(procs, pgid, roots, exclude={me})
            if marker is not None:
                # The tree by environment: catches what escaped the group and lost its
                # parent link in the same instant.
                marked = await anyio.to_thread.run_sync(marked_pids, marker)
                members |= {pid for pid in marked if pid in procs and pid != me}
            members |= {pid for pid, p in procs.items() if p.pgid in groups and pid != me}
            groups |= {procs[pid].pgid for pid in members}
            groups.discard(own_group)  # never our own group: that would kill the caller
            alive = [pid for pid in members if not procs[pid].zombie]
            for group in groups:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGKILL)
            for pid in alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            known.update({pid: procs[pid].start for pid in members})
            # A zombie whose parent is still dying is re-parented (to us, the subreaper)
            # a moment later: wait for that, then reap it.
            orphaning = False
            for pid in members - {leader}:
                proc = procs[pid]
                if proc.zombie and proc.ppid == me:
                    with contextlib.suppress(ChildProcessError):
                        # WNOHANG on a known zombie: returns at once, never blocks.
                        os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222
                elif proc.zombie and proc.ppid in members:
                    orphaning = True
            if not alive and not orphaning:
                return
            await anyio.sleep(0.01)
