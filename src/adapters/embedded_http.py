"""An ASGI app served by uvicorn inside the caller's event loop, for as long as a block runs.

``async with serve_asgi(app, host=..., port=0, service="forge") as server: server.port``
binds first (port 0 picks a free one, known before any request), serves until the block
ends, then stops within a deadline even when the caller is being cancelled: what still runs
``shutdown_timeout + 2`` seconds later is cancelled. uvicorn's signal handlers are left out:
SIGINT and SIGTERM belong to the host process. Used by the local forge's git server and the
scripted model server.
"""

from __future__ import annotations

import contextlib
import math
import socket
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import uvicorn

from codeyard.domain.errors import ServiceUnavailable

STARTUP_TIMEOUT_S = 10.0


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(frozen=True)
class RunningServer:
    port: int


def _bind(host: str, port: int, service: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ServiceUnavailable(
            f"the {service} server cannot bind its address", service=service, host=host
        ) from exc
    return sock


@asynccontextmanager
async def serve_asgi(
    app: Any,
    *,
    host: str,
    port: int = 0,
    service: str,
    shutdown_timeout: float = 3.0,
    on_closing: Callable[[], None] | None = None,
) -> AsyncIterator[RunningServer]:
    """Serve ``app`` until the block ends (module doc). ``on_closing`` runs first at the
    end (e.g. to let streaming responses finish early)."""
    sock = _bind(host, port, service)
    server = _EmbeddedServer(
        uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            ws="none",
            timeout_graceful_shutdown=max(1, math.ceil(shutdown_timeout)),
        )
    )
    stopped = anyio.Event()

    async def serve() -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            sock.close()
            stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        try:
            with anyio.fail_after(STARTUP_TIMEOUT_S):
                while not server.started:
                    if stopped.is_set():
                        msg = f"the {service} server stopped during start-up"
                        raise ServiceUnavailable(msg, service=service)
                    await anyio.sleep(0.01)
            yield RunningServer(port=int(sock.getsockname()[1]))
        finally:
            # Shielded with a deadline: stop even when the caller is being cancelled, and
            # never hang the caller on a stuck connection.
            with anyio.CancelScope(shield=True):
                if on_closing is not None:
                    on_closing()
                server.should_exit = True
                with anyio.move_on_after(shutdown_timeout + 2):
                    await stopped.wait()
                if not stopped.is_set():
                    server.force_exit = True
                    tg.cancel_scope.cancel()
