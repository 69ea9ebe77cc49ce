"""The scripted model server: uvicorn serving :mod:`.app` inside the caller's event loop.

``async with ModelServer(scenario) as server:`` binds (port 0 picks a free one), serves
until the block ends, then stops within a deadline even with stalled streams open: stalls
end when the server closes, and what is still running after ``shutdown_timeout`` is
cancelled.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import socket
import struct
from collections.abc import Generator
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

import anyio
import uvicorn
from anyio.abc import TaskGroup

from codeyard.domain.errors import ServiceUnavailable
from codeyard.testing.model_server.app import ModelApp, ServerState
from codeyard.testing.model_server.recording import RecordedRequest
from codeyard.testing.model_server.router import Script

_SIOCGIFADDR = 0x8915
_STARTUP_TIMEOUT_S = 10.0


def interface_ipv4(name: str = "docker0") -> str:
    """The IPv4 address of a network interface (the default Docker bridge gateway that
    containers reach the host by)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            request = struct.pack("256s", name.encode()[:15])
            packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
    except OSError as exc:
        msg = f"network interface {name!r} has no IPv4 address (is Docker running?)"
        raise ServiceUnavailable(msg, service="docker", interface=name) from exc
    return socket.inet_ntoa(packed[20:24])


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: inside a test run, Ctrl-C and SIGTERM belong
    to the host process, not to a helper server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ModelServer:
    """A scripted model API on ``host:port`` (see the package docstring).

    ``host="0.0.0.0"`` makes it reachable from containers: use :meth:`bridge_base_url`
    (default bridge) or :meth:`url_via` with a network's gateway address. ``scenario`` is
    one :class:`~.scenario.Scenario` for every conversation, or a :class:`~.router.Router`
    choosing one per conversation by marker.
    """

    def __init__(
        self,
        scenario: Script,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        shutdown_timeout: float = 3.0,
    ) -> None:
        self.scenario = scenario
        self.host = host
        self.shutdown_timeout = shutdown_timeout
        #: Every request received, in arrival order.
        self.requests: list[RecordedRequest] = []
        self._wanted_port = port
        self._port: int | None = None
        self._uvicorn: _EmbeddedServer | None = None
        self._stack: AsyncExitStack | None = None
        self._state: ServerState | None = None
        self._stopped: anyio.Event | None = None
        self._task_group: TaskGroup | None = None

    # --- addresses -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            msg = "the model server is not running: use `async with ModelServer(...)`"
            raise RuntimeError(msg)
        return self._port

    def url_via(self, host: str) -> str:
        """The base URL as seen by a client reaching this machine at ``host``."""
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """For clients on this machine (``http://127.0.0.1:PORT``), no trailing slash."""
        local = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return self.url_via(local)

    def bridge_base_url(self, interface: str = "docker0") -> str:
        """For containers on the Docker bridge ``interface`` (needs ``host="0.0.0.0"``)."""
        if self.host not in ("0.0.0.0", ""):
            msg = f"the model server listens on {self.host} only: start it with host='0.0.0.0'"
            raise RuntimeError(msg)
        return self.url_via(interface_ipv4(interface))

    def model_requests(self, kind: str | None = "main") -> list[RecordedRequest]:
        """Requests to a model API, optionally only those answered by ``kind`` turns."""
        return [r for r in self.requests if r.dialect is not None and kind in (None, r.kind)]

    def routed_requests(self, marker: str, kind: str | None = "main") -> list[RecordedRequest]:
        """Model requests a :class:`~.router.Router` sent to the scenario of ``marker``."""
        return [r for r in self.model_requests(kind) if r.extra.get("route") == marker]

    # --- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._wanted_port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        self._state = ServerState(self.scenario, self.requests, anyio.Event())
        config = uvicorn.Config(
            ModelApp(self._state).build(),
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            ws="none",
            timeout_graceful_shutdown=max(1, math.ceil(self.shutdown_timeout)),
        )
        self._uvicorn = _EmbeddedServer(config)
        self._stopped = anyio.Event()
        self._stack = AsyncExitStack()
        task_group = await self._stack.enter_async_context(anyio.create_task_group())
        task_group.start_soon(self._serve, sock)
        try:
            await self._wait_started()
        except BaseException:
            await self._shutdown(task_group)
            await self._stack.aclose()
            raise
        self._task_group = task_group
        return self

    async def _serve(self, sock: socket.socket) -> None:
        assert self._uvicorn is not None
        assert self._stopped is not None
        try:
            await self._uvicorn.serve(sockets=[sock])
        finally:
            sock.close()
            self._stopped.set()

    async def _wait_started(self) -> None:
        assert self._uvicorn is not None
        assert self._stopped is not None
        with anyio.fail_after(_STARTUP_TIMEOUT_S):
            while not self._uvicorn.started:
                if self._stopped.is_set():
                    msg = "the model server stopped during start-up"
                    raise ServiceUnavailable(msg, service="model-server")
                await anyio.sleep(0.01)

    async def _shutdown(self, task_group: TaskGroup) -> None:
        assert self._uvicorn is not None
        assert self._stopped is not None
        assert self._state is not None
        # Shielded with a deadline: the server must stop even when the caller is being
        # cancelled, and must not hang the caller on a stuck connection.
        with anyio.CancelScope(shield=True):
            self._state.closing.set()
            self._uvicorn.should_exit = True
            with anyio.move_on_after(self.shutdown_timeout + 2):
                await self._stopped.wait()
            if not self._stopped.is_set():
                self._uvicorn.force_exit = True
                task_group.cancel_scope.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        assert self._task_group is not None
        try:
            await self._shutdown(self._task_group)
        finally:
            await self._stack.__aexit__(exc_type, exc, tb)
            self._port = None
