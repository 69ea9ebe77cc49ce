"""ProcessLauncher running processes with ``docker exec`` inside a running container.

How a process is started (one exec, ~57 ms): ``argv`` is wrapped in a tiny ``sh`` script

    sh -c WRAPPER codeyard-exec CWD LOOKUP_PATH ARGV0 env -i K=V... ARGV...

which changes to ``CWD``, checks that ``ARGV0`` exists on the given ``PATH``, prints ONE
marker line on stderr and then ``exec``s ``env -i K=V... ARGV...`` — so the process keeps
the shell's pid, and its environment is exactly ``env`` (``env -i``: nothing of the
image's or container's environment leaks in). The marker is ``@codeyard-exec:pgid=<pid>``
(or ``:notfound`` / ``:nocwd``, which :meth:`DockerExecLauncher.start` turns into
``ExecutableNotFound`` / ``NotFound``); the handle strips it from stderr.

Process group: runc starts every exec'd process as a session (and group) leader, so the
shell's pid is the group id; the wrapper verifies it in ``/proc`` and falls back to
``setsid`` (which then does not fork) where a runtime does not. Signals go to the whole
group with a second exec, ``kill -<N> -<pgid>``; ``aclose`` first reads the container's
``/proc/*/stat`` and SIGKILLs the group together with every descendant of its members
(a tool started in a session of its own escapes the group). The exit code comes from
``exec_inspect`` (a process killed by signal N reports ``128 + N``).

Output is read from the exec's hijacked socket without threads: the handle waits for the
socket to be readable, reads what is there and demultiplexes Docker's stream frames
(8-byte header: stream type, 3 zero bytes, big-endian payload size) into stdout and
stderr. Every blocking docker-py call (exec create/start/inspect, the kill exec) runs in a
worker thread under the shared :class:`anyio.CapacityLimiter`.

Orphans of the group are re-parented to the container's PID 1: run worker containers with
an init (``--init``) or killed tool processes stay zombies inside the container.

Measured quirk (Docker 20.10): while an exec'd leader has exited but a child it left still
holds its stdout, the engine delays every NEW exec into that container by ~4 s (it waits
for the old exec's output to drain). The kill exec of ``signal_group``/``aclose`` is then
late by that much; nothing is lost, the group still dies.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

import anyio
import anyio.to_thread
import docker
import docker.errors

from codeyard.adapters.docker._mapping import DOCKER_ERRORS, translate_error
from codeyard.adapters.docker.exec_stream import ExecStream
from codeyard.adapters.process.tree import run_members, table
from codeyard.domain.errors import (
    CodeyardError,
    ExecutableNotFound,
    InvalidRequest,
    NotFound,
    ServiceUnavailable,
)

T = TypeVar("T")

MARKER = "@codeyard-exec:"
_WRAPPER = (
    "cd_to=$1 lookup=$2 cmd=$3; shift 3\n"
    'if [ -n "$cd_to" ] && ! cd "$cd_to" 2>/dev/null; then\n'
    f'  echo "{MARKER}nocwd" >&2; exit 126; fi\n'
    'if ! (PATH=$lookup; command -v "$cmd") >/dev/null 2>&1; then\n'
    f'  echo "{MARKER}notfound" >&2; exit 127; fi\n'
    'if [ -r /proc/$$/stat ] && [ "$(cut -d" " -f5 /proc/$$/stat)" != "$$" ]; then\n'
    '  set -- setsid "$@"; fi\n'
    f'echo "{MARKER}pgid=$$" >&2\n'
    'exec "$@"\n'
)
#: How long ``start`` waits for the wrapper's marker line.
START_DEADLINE_S = 30.0
#: Upper bound of ``aclose`` (kill, wait for the exit code, close the socket).
CLOSE_DEADLINE_S = 10.0
#: ``wait`` polls ``exec_inspect``: quickly at first and after EOF, then backing off.
_POLL_MIN_S = 0.02
_POLL_MAX_S = 1.0


def _raw_socket(result: Any) -> socket.socket:
    """The plain (or TLS) socket behind what docker-py's ``exec_start(socket=True)`` gives."""
    sock = getattr(result, "_sock", result)  # socket.SocketIO on unix sockets
    if not isinstance(sock, socket.socket):
        raise ServiceUnavailable(
            "this Docker transport gives no socket to stream exec output from",
            service="docker",
            transport=type(result).__name__,
        )
    return sock


class DockerExecHandle:
    """One exec'd process group; see the module docstring."""

    def __init__(
        self,
        launcher: DockerExecLauncher,
        exec_id: str,
        stream: ExecStream,
        pgid: int,
    ) -> None:
        self._launcher = launcher
        self._exec_id = exec_id
        self._stream = stream
        self._pgid = pgid
        self._returncode: int | None = None
        self._next_poll = 0.0
        self._poll_s = _POLL_MIN_S
        self._inspecting = anyio.Lock()
        self._closed = False

    @property
    def pid(self) -> int | None:
        return None  # a pid inside the container's namespace is no use to the caller

    @property
    def pgid(self) -> int:
        """The process group id inside the container."""
        return self._pgid

    @property
    def exec_id(self) -> str:
        return self._exec_id

    @property
    def returncode(self) -> int | None:
        return self._returncode

    def stdout_chunks(self) -> ExecStream.Chunks:
        return self._stream.chunks(1)

    def stderr_chunks(self) -> ExecStream.Chunks:
        return self._stream.chunks(2)

    async def signal_group(self, signum: int) -> None:
        if self._closed:
            return
        await self._launcher.signal_group(self._pgid, signum)

    async def wait(self) -> int:
        """Cancel-safe; polls ``exec_inspect`` at most every poll interval however many
        times it is called (the run loop restarts it often)."""
        while self._returncode is None:
            await anyio.sleep_until(self._next_poll)
            async with self._inspecting:
                if self._returncode is not None or anyio.current_time() < self._next_poll:
                    continue
                info = await self._launcher.call(self._launcher.api.exec_inspect, self._exec_id)
                if not info.get("Running") and info.get("ExitCode") is not None:
                    self._returncode = int(info["ExitCode"])
                    break
                self._poll_s = (
                    _POLL_MIN_S if self._stream.eof else min(self._poll_s * 2, _POLL_MAX_S)
                )
                self._next_poll = anyio.current_time() + self._poll_s
        return self._returncode

    async def aclose(self) -> None:
        if self._closed:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_DEADLINE_S):
            try:
                # The group may outlive its leader (a tool in the background): always kill,
                # and the tools that run in sessions of their own with it.
                await self._launcher.kill_run(self._pgid)
                with anyio.move_on_after(CLOSE_DEADLINE_S / 2):
                    await self.wait()
            except CodeyardError:
                pass  # the container is gone: so is the group
            finally:
                self._closed = True
                self._stream.close()


class DockerExecLauncher:
    """:class:`~codeyard.ports.process_launcher.ProcessLauncher` for a running container.

    ``client`` must have a connection pool larger than ``limiter``'s capacity (see
    :class:`~codeyard.adapters.docker.container_runtime.DockerContainerRuntime`); the
    container needs ``sh`` and ``kill`` (busybox or coreutils are both fine).
    """

    def __init__(
        self,
        client: docker.DockerClient,
        container_id: str,
        *,
        limiter: anyio.CapacityLimiter | None = None,
    ) -> None:
        self._client = client
        self.api = client.api
        self._container_id = container_id
        self._limiter = limiter or anyio.CapacityLimiter(8)

    @property
    def container_id(self) -> str:
        return self._container_id

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking docker-py call in a thread; docker errors become domain errors."""

        def run() -> T:
            return fn(*args, **kwargs)

        try:
            return await anyio.to_thread.run_sync(run, limiter=self._limiter)
        except DOCKER_ERRORS as exc:
            status = getattr(exc, "status_code", None)
            if status in (404, 409):  # the container is gone or not running
                raise ServiceUnavailable(
                    "the container cannot run processes",
                    service="container",
                    container_id=self._container_id,
                    detail=str(getattr(exc, "explanation", None) or exc),
                ) from exc
            raise translate_error(exc, container_id=self._container_id) from exc

    async def start(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str | None = None,
    ) -> DockerExecHandle:
        if not argv:
            raise InvalidRequest("argv must not be empty", errors=[{"loc": "argv", "msg": "empty"}])
        assignments = [f"{key}={value}" for key, value in env.items()]
        cmd = [
            "sh", "-c", _WRAPPER, "codeyard-exec",
            cwd or "", env.get("PATH", ""), argv[0],
            "env", "-i", *assignments, *argv,
        ]  # fmt: skip
        created = await self.call(
            self.api.exec_create, self._container_id, cmd, stdin=False, tty=False
        )
        exec_id = str(created["Id"])
        raw = await self.call(self.api.exec_start, exec_id, socket=True)
        stream = ExecStream(_raw_socket(raw), marker=MARKER, owner=raw)
        try:
            with anyio.fail_after(START_DEADLINE_S):
                marker = await stream.read_marker()
        except BaseException:
            stream.close()
            raise
        if marker is None or not marker.startswith("pgid="):
            stream.close()
            self._start_failed(marker, exec_id, argv, cwd, stream.preamble)
        return DockerExecHandle(self, exec_id, stream, int(marker.removeprefix("pgid=")))

    def _start_failed(
        self, marker: str | None, exec_id: str, argv: Sequence[str], cwd: str | None, seen: str
    ) -> NoReturn:
        if marker == "notfound":
            raise ExecutableNotFound("executable not found", executable=argv[0])
        if marker == "nocwd":
            raise NotFound("working directory does not exist", cwd=cwd)
        if "executable file not found" in seen or "no such file" in seen.lower():
            raise ExecutableNotFound("the container has no sh", executable="sh", detail=seen)
        raise ServiceUnavailable(
            "the process did not start in the container",
            service="container",
            container_id=self._container_id,
            exec_id=exec_id,
            detail=seen[-500:],
        )

    async def kill_run(self, pgid: int) -> None:
        """SIGKILL group ``pgid`` and every descendant of its members, found by reading
        the container's ``/proc/*/stat`` (see :mod:`codeyard.adapters.process.tree`)."""
        stat = await self._output(["sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null; true"])
        procs = table(stat.decode("utf-8", errors="replace").splitlines())
        leader = procs.get(pgid)
        # The leader's descendants are only its own while it lives (a pid can be reused).
        roots = [pgid] if leader is not None and leader.pgid == pgid else []
        members = sorted(run_members(procs, pgid, roots) - {pgid})
        await self._output(["kill", "-9", f"-{pgid}", *map(str, members)])

    async def _output(self, cmd: list[str]) -> bytes:
        """Run ``cmd`` in the container to completion; its combined output."""
        created = await self.call(self.api.exec_create, self._container_id, cmd)
        output = await self.call(self.api.exec_start, created["Id"])
        return output if isinstance(output, bytes) else b""

    async def signal_group(self, pgid: int, signum: int) -> None:
        """``kill -<signum> -<pgid>`` in the container; a group already gone is a no-op."""
        # Attached and not detached: exec_start then returns only once kill has run, which
        # keeps "signal, then wait" ordered (an exec without attached output returns at
        # once, and Docker reports it running for seconds). Its output ("no such
        # process" for a group already gone) is dropped: that case is a no-op.
        await self._output(["kill", f"-{int(signum)}", f"-{int(pgid)}"])
