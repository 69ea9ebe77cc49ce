"""ForgeServer: the forge's repositories over git smart HTTP, for clones and pushes from
worker containers.

``async with ForgeServer(forge, token=...) as server:`` binds (port 0 picks a free one),
serves with uvicorn inside the caller's event loop until the block ends, then stops
within a deadline: what still runs after ``shutdown_timeout`` is cancelled.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

from codeyard.adapters.embedded_http import serve_asgi
from codeyard.adapters.forge.forge import LocalForge
from codeyard.adapters.forge.http import GitHttpApp


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
        self._stack: AsyncExitStack | None = None

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
        stack = AsyncExitStack()
        running = await stack.enter_async_context(
            serve_asgi(
                self._app,
                host=self.host,
                port=self._wanted_port,
                service="forge",
                shutdown_timeout=self.shutdown_timeout,
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
