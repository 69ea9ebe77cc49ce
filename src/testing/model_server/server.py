"""The scripted model server: uvicorn serving :mod:`.app` inside the caller's event loop.

``async with ModelServer(scenario) as server:`` binds (port 0 picks a free one), serves
until the block ends, then stops within a deadline even with stalled streams open: stalls
end when the server closes, and what is still running after ``shutdown_timeout`` is
cancelled.
"""

from __future__ import annotations

import fcntl
import socket
import struct
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

import anyio

from codeyard.adapters.embedded_http import serve_asgi
from codeyard.domain.errors import ServiceUnavailable
from codeyard.testing.model_server.app import ModelApp, ServerState
from codeyard.testing.model_server.recording import RecordedRequest
from codeyard.testing.model_server.router import Script

_SIOCGIFADDR = 0x8915


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
        self._stack: AsyncExitStack | None = None
        self._state: ServerState | None = None

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
        self._state = ServerState(self.scenario, self.requests, anyio.Event())
        state = self._state
        stack = AsyncExitStack()
        running = await stack.enter_async_context(
            serve_asgi(
                ModelApp(state).build(),
                host=self.host,
                port=self._wanted_port,
                service="model-server",
                shutdown_timeout=self.shutdown_timeout,
                # Streams in progress (Stall, Delay) end at once instead of timing out.
                on_closing=state.closing.set,
            )
        )
        self._stack, self._port = stack, running.port
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._stack is not None
        try:
            await self._stack.__aexit__(exc_type, exc, tb)
        finally:
            self._stack, self._port = None, None
