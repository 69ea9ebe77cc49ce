"""A TCP proxy in front of a real redis-server that loses one reply.

Once armed with a command name (``XADD``, ``EVALSHA``), it forwards everything both ways
until a client sends that command and Redis answers it with a non-error reply: then it
closes the client's connection instead of forwarding the reply. Redis has applied the
command; the client sees a connection reset and (redis-py's default ``Retry``) sends it
again on a new connection. An error reply (``NOSCRIPT``: the script was not run) is
forwarded and the proxy stays armed. One reply is lost per arming.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from urllib.parse import urlsplit

import anyio
import anyio.abc
from anyio.abc import SocketStream

# The command name: the first bulk string of the RESP array a command is sent as.
_COMMAND = re.compile(rb"^\*\d+\r\n\$\d+\r\n([A-Za-z|]+)\r\n")


class LostReplyProxy:
    """See the module docstring. ``url`` is the Redis URL to give the client."""

    def __init__(self, upstream_url: str, port: int) -> None:
        parts = urlsplit(upstream_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 6379
        self.port = port
        self.url = upstream_url.replace(f":{self._port}", f":{port}", 1)
        self._armed: bytes | None = None
        #: Replies lost so far.
        self.dropped = 0

    def arm(self, command: str) -> None:
        """Lose the reply to the next ``command`` that succeeds."""
        self._armed = command.upper().encode()

    async def handle(self, client: SocketStream) -> None:
        # Either side going away ends that connection, never the proxy.
        with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await self._relay(client)

    async def _relay(self, client: SocketStream) -> None:
        async with client, await anyio.connect_tcp(self._host, self._port) as upstream:
            pending = False  # this connection's last command is the armed one

            async def to_redis() -> None:
                nonlocal pending
                async for chunk in client:
                    match = _COMMAND.match(chunk)
                    if match and self._armed is not None:
                        pending = match.group(1).upper() == self._armed
                    await upstream.send(chunk)
                tg.cancel_scope.cancel()

            async def to_client() -> None:
                async for chunk in upstream:
                    if pending and not chunk.startswith(b"-"):
                        self._armed, self.dropped = None, self.dropped + 1
                        break  # the reply is lost: both connections close
                    await client.send(chunk)
                tg.cancel_scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(to_redis)
                tg.start_soon(to_client)


@asynccontextmanager
async def lost_reply_proxy(upstream_url: str) -> AsyncIterator[LostReplyProxy]:
    """A running :class:`LostReplyProxy` on a free local port, stopped on exit."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    proxy = LostReplyProxy(upstream_url, port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, proxy.handle)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()
