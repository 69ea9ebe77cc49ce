"""ForgeServer: the forge's repositories over git smart HTTP, for clones and pushes from
worker containers.

``async with ForgeServer(forge, token=...) as server:`` binds (port 0 picks a free one),
serves with uvicorn inside the caller's event loop until the block ends, then stops
within a deadline: what still runs after ``shutdown_timeout`` is cancelled.
"""

from __future__ import annotations

import contextlib
import math
import socket
from collections.abc import Generator
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

import anyio
import uvicorn
from anyio.abc import TaskGroup

from codeyard.adapters.forge.forge import LocalForge
from codeyard.adapters.forge.http import GitHttpApp
from codeyard.domain.errors import ServiceUnavailable

_STARTUP_TIMEOUT_S = 10.0


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: they belong to the host process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class ForgeServer:
    """Serves every repository of ``forge`` at ``/<name>.git`` (HTTP Basic: password ==
    ``token``). ``host="0.0.0.0"`` makes it reachable from containers."""

    def __init__(
        self,
        forge: LocalForge,
        *,
        host: str = "0.0.0.0",
        port: int = 0,
        token: str,
        shutdown_timeout: float = 3.0,
    ) -> None:
        self.forge = forge
        self.host = host
        self.shutdown_timeout = shutdown_timeout
        self._app = GitHttpApp(forge.root, token=token, git_home=forge.git_home)
        self._wanted_port = port
        self._port: int | None = None
        self._uvicorn: _EmbeddedServer | None = None
        self._stopped: anyio.Event | None = None
        self._stack: AsyncExitStack | None = None
        self._task_group: TaskGroup | None = None

    def __repr__(self) -> str:
        # Explicit so that the token can never show up through a default repr.
        return f"ForgeServer(root={str(self.forge.root)!r}, host={self.host!r}, port={self._port})"

    @property
    def port(self) -> int:
        if self._port is None:
            msg = "the forge server is not running: use `async with ForgeServer(...)`"
            raise RuntimeError(msg)
        return self._port

    @property
    def url(self) -> str:
        """For clients on this machine: ``http://127.0.0.1:PORT`` (no trailing slash)."""
        local = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{local}:{self.port}"

    def repo_url(self, name: str, host: str | None = None) -> str:
        """The clone URL of repository ``name``, as seen from ``host`` (default: this
        machine), e.g. ``host="host.docker.internal"`` inside a container."""
        self.forge.repo_path(name)  # validates the name
        base = self.url if host is None else f"http://{host}:{self.port}"
        return f"{base}/{name}.git"

    async def __aenter__(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._wanted_port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            msg = "the forge server cannot bind its address"
            raise ServiceUnavailable(msg, service="forge", host=self.host) from exc
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
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
            self._port = None
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
                    msg = "the forge server stopped during start-up"
                    raise ServiceUnavailable(msg, service="forge")
                await anyio.sleep(0.01)

    async def _shutdown(self, task_group: TaskGroup) -> None:
        assert self._uvicorn is not None
        assert self._stopped is not None
        # Shielded with a deadline: stop even when the caller is being cancelled, and never
        # hang on a stuck clone.
        with anyio.CancelScope(shield=True):
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
            self._task_group = None
