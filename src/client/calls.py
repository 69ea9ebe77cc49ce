"""One command round trip over the event bus: publish, wait for the reply, clean up."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

import anyio
import structlog
from pydantic import JsonValue

from codeyard.domain.commands import AnyCommand, Reply, command_fields
from codeyard.domain.errors import CodeyardError, InvalidRequest, ReplyTimeout
from codeyard.ports.event_bus import EventBus

log = structlog.get_logger(__name__)

MANAGER_SERVICE = "worker-manager"
#: How long one blocking read of the reply stream waits before looking at the deadline.
READ_BLOCK_S = 1.0
#: Deadline of the (shielded) deletion of a reply stream.
CLEANUP_S = 5.0


def new_request_id() -> str:
    return uuid.uuid4().hex


class CommandCaller:
    """Sends commands to the worker manager on ``commands_stream`` and returns results."""

    def __init__(self, bus: EventBus, commands_stream: str, reply_timeout_s: float) -> None:
        if reply_timeout_s <= 0:
            raise InvalidRequest("reply_timeout_s must be > 0", reply_timeout_s=reply_timeout_s)
        self.bus = bus
        self.commands_stream = commands_stream
        self.reply_timeout_s = reply_timeout_s

    async def call(self, command: AnyCommand, *, timeout_s: float | None = None) -> JsonValue:
        """The ``result`` of the reply to ``command``.

        Raises the reply's error as its CodeyardError class, :class:`ReplyTimeout` when no
        reply arrives within ``timeout_s`` (default ``reply_timeout_s``), and what the bus
        raises (``ServiceUnavailable`` for Redis). The reply stream is deleted once read,
        unless the command names its own ``reply_to`` (the caller owns that stream).
        """
        timeout = self.reply_timeout_s if timeout_s is None else timeout_s
        if timeout <= 0:
            raise InvalidRequest("timeout_s must be > 0", timeout_s=timeout)
        await self.bus.publish(self.commands_stream, command_fields(command))
        reply = await self._await_reply(command, timeout)
        if command.reply_to is None:
            await self._drop(command.reply_stream)
        reply.raise_for_error()
        return reply.result

    async def _await_reply(self, command: AnyCommand, limit_s: float) -> Reply:
        stream, cursor = command.reply_stream, "0-0"
        with anyio.move_on_after(limit_s):
            while True:
                block = min(READ_BLOCK_S, limit_s)
                for entry in await self.bus.read(stream, after=cursor, block_s=block):
                    cursor = entry.id
                    reply = _as_reply(entry.fields)
                    if reply is not None and reply.request_id == command.request_id:
                        return reply
        raise ReplyTimeout(
            f"no reply to the {command.type} command",
            service=MANAGER_SERVICE,
            request_id=command.request_id,
            reply_stream=stream,
            timeout_s=limit_s,
        )

    async def _drop(self, stream: str) -> None:
        """Delete a per-request reply stream; a failure only leaks a small key: logged."""
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_S) as scope:
            try:
                await self.bus.delete_stream(stream)
            except CodeyardError as exc:
                log.warning("reply stream not deleted", stream=stream, error=str(exc))
        if scope.cancelled_caught:
            log.warning("reply stream deletion timed out", stream=stream)


def _as_reply(fields: Mapping[str, str]) -> Reply | None:
    """A reply entry, or ``None`` for a foreign entry on a shared reply stream."""
    try:
        return Reply.from_fields(fields)
    except CodeyardError as exc:
        log.warning("skipping a non-reply entry on a reply stream", error=str(exc))
        return None
