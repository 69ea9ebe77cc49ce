"""ProcessLauncher for local subprocesses: each CLI in its own session and process group.

Linux/POSIX only (process groups, ``killpg``). See :class:`LocalProcessLauncher`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence

import anyio
import anyio.abc

from codeyard.adapters.process.reaper import MARKER_VAR, become_subreaper, kill_run
from codeyard.domain.errors import ExecutableNotFound, InvalidRequest, NotFound

#: How long ``aclose`` waits for a killed group to be reaped before giving up.
CLOSE_DEADLINE_S = 5.0
#: Bytes asked of the pipe per read.
_READ_SIZE = 65536
#: Polling interval bounds of ``wait`` (see :meth:`LocalProcessHandle.wait`).
_POLL_MIN_S = 0.002
_POLL_MAX_S = 0.05


def exit_code(returncode: int) -> int:
    """Popen's ``-N`` (killed by signal N) as the shell's ``128 + N``."""
    return 128 - returncode if returncode < 0 else returncode


class _Chunks:
    """Async iterator over one pipe. Cancelling a pending ``__anext__`` loses no bytes and
    leaves the iterator usable (asyncio's StreamReader keeps unread data buffered), which
    the run loop relies on to wait on stdout and stderr at once."""

    def __init__(self, stream: anyio.abc.ByteReceiveStream | None) -> None:
        self._stream = stream
        self._started = False

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        if self._stream is None:
            raise StopAsyncIteration
        try:
            return await self._stream.receive(_READ_SIZE)
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._stream = None
            raise StopAsyncIteration from None

    def claim(self) -> _Chunks:
        if self._started:
            msg = "each output stream may be iterated once"
            raise RuntimeError(msg)
        self._started = True
        return self


class LocalProcessHandle:
    """A local process leading its own process group (pgid == pid)."""

    def __init__(self, process: anyio.abc.Process, *, marker: str | None = None) -> None:
        self._process = process
        self._marker = marker
        self._pgid = process.pid
        self._stdout = _Chunks(process.stdout)
        self._stderr = _Chunks(process.stderr)
        self._closed = False

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def pgid(self) -> int:
        """The process group id (the leader's pid): it outlives the leader while any of
        its children lives."""
        return self._pgid

    @property
    def returncode(self) -> int | None:
        code = self._process.returncode
        return None if code is None else exit_code(code)

    def stdout_chunks(self) -> AsyncIterator[bytes]:
        return self._stdout.claim()

    def stderr_chunks(self) -> AsyncIterator[bytes]:
        return self._stderr.claim()

    async def signal_group(self, signum: int) -> None:
        if self._closed:
            return
        # Gone already (PermissionError: the group id now names someone else's group).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pgid, signum)

    async def wait(self) -> int:
        """The leader's exit code.

        Polls the exit status instead of awaiting asyncio's ``Process.wait``: on Python 3.11
        that only returns once every pipe is closed, and a tool process the CLI left
        behind can hold stdout open long after the CLI itself exited. Cancel-safe.
        """
        delay = _POLL_MIN_S
        while (code := self._process.returncode) is None:
            await anyio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX_S)
        return exit_code(code)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_DEADLINE_S):
            # The group AND the descendants of its members: tools run in sessions of
            # their own (Claude's Bash tool) escape killpg. No killpg before it: the tree
            # must be read while the parents live (their orphans lose the link).
            await kill_run(self._pgid, leader=self._process.pid, marker=self._marker)
            await self.wait()
            # Closes the pipes and lets asyncio's transport finish with the child.
            await self._process.aclose()


class LocalProcessLauncher:
    """:class:`~codeyard.ports.process_launcher.ProcessLauncher` for local subprocesses.

    Each process starts with ``start_new_session=True``: it leads a new session and process
    group, so ``signal_group`` (``os.killpg``) reaches every tool process it spawns, and a
    terminal's Ctrl-C does not. stdin is ``/dev/null``; ``env`` is passed as given (the
    executable is looked up on ``env["PATH"]`` when argv[0] has no slash) plus one tracking
    variable, ``CODEYARD_PROCESS_MARKER``, unique per process: every descendant inherits
    it unless it scrubs its environment, so ``aclose`` finds tools that escaped both the
    group and the parent links (a tool forked in a new session while its parent was being
    killed, e.g. Codex's shell snapshot).

    ``aclose`` goes further than the group: it SIGKILLs the group and every descendant of
    its members found in ``/proc`` (:func:`~codeyard.adapters.process.reaper.kill_run`),
    so a tool the CLI started in a session of its own dies too.

    Orphans: a tool process that outlives the CLI is re-parented to the nearest
    "subreaper", else PID 1. Where PID 1 does not reap (some sandboxes and containers),
    killed orphans linger as zombies and keep the process group "existing". With
    ``adopt_orphans=True`` this process becomes a child subreaper
    (:func:`~codeyard.adapters.process.reaper.become_subreaper`; process-wide, Linux) and
    ``aclose`` reaps the adopted processes of the run, so that afterwards
    ``os.killpg(pgid, 0)`` raises ``ProcessLookupError``. Off by default: a process that
    adopts orphans must reap them, and only those of this launcher's groups are.
    """

    def __init__(self, *, adopt_orphans: bool = False) -> None:
        if adopt_orphans:
            become_subreaper()

    async def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None = None,
    ) -> LocalProcessHandle:
        if not argv:
            raise InvalidRequest("argv must not be empty", errors=[{"loc": "argv", "msg": "empty"}])
        marker = uuid.uuid4().hex
        try:
            process = await anyio.open_process(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env={**env, MARKER_VAR: marker},
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            if cwd is not None and exc.filename == cwd:
                raise NotFound("working directory does not exist", cwd=cwd) from exc
            raise ExecutableNotFound(
                "executable not found", executable=argv[0], path=env.get("PATH")
            ) from exc
        except PermissionError as exc:
            raise InvalidRequest(
                "cannot execute",
                errors=[{"loc": "argv[0]", "msg": str(exc)}],
                executable=argv[0],
            ) from exc
        except NotADirectoryError as exc:
            raise NotFound("working directory is not a directory", cwd=cwd) from exc
        return LocalProcessHandle(process, marker=marker)
