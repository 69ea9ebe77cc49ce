"""The CommandService's bookkeeping on other streams: replies already sent, dead letters.

Kept apart from :mod:`codeyard.app.command_service` so that module stays about delivery
(reading, concurrency, forwarding).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import structlog

from codeyard.domain.commands import AnyCommand, Reply, parse_command, salvaged_reply_stream
from codeyard.domain.errors import CodeyardError, InvalidCommand, PoisonCommand
from codeyard.domain.streams import StreamMessage
from codeyard.ports.event_bus import EventBus

log = structlog.get_logger(__name__)


async def already_replied(bus: EventBus, command: AnyCommand) -> bool:
    """Whether ``command``'s reply stream holds a reply to its request id.

    Foreign entries on a shared reply stream (``reply_to``) are skipped, not errors.
    """
    after = "0-0"
    while True:
        entries = await bus.read(command.reply_stream, after=after, count=100)
        if not entries:
            return False
        for entry in entries:
            try:
                if Reply.from_fields(entry.fields).request_id == command.request_id:
                    return True
            except CodeyardError:
                continue
        after = entries[-1].id


@dataclass(frozen=True)
class DeadLetters:
    """Ends for entries that cannot be answered normally; ``stream`` is the dead letter."""

    bus: EventBus
    stream: str
    consumer: str
    max_deliveries: int
    #: Dead letters kept (approximately: Redis trims whole nodes); ``None``: unbounded.
    maxlen: int | None = 10_000

    async def dead_letter(self, message: StreamMessage, reason: str) -> None:
        """Publish ``message`` (its fields as JSON, where it came from, why)."""
        log.warning("command dead-lettered", id=message.id, reason=reason)
        await self.bus.publish(
            self.stream,
            {
                "stream": message.stream,
                "id": message.id,
                "reason": reason,
                "deliveries": str(message.deliveries),
                "consumer": self.consumer,
                "entry": json.dumps(message.fields),
            },
            maxlen=self.maxlen,
        )

    async def poison(self, message: StreamMessage) -> None:
        """Dead-letter an entry delivered too often, unless it was answered (only the ACK
        was lost), and tell its client when one can be named (best effort: the dead letter
        is what counts, a failed reply is only logged)."""
        reason = f"delivered {message.deliveries} times (max {self.max_deliveries})"
        try:
            command: AnyCommand | None = parse_command(message.fields)
        except InvalidCommand:
            command = None
        if command is not None and await already_replied(self.bus, command):
            return
        await self.dead_letter(message, reason)
        if command is None:
            return
        reply = Reply.failure(command.request_id, PoisonCommand(reason))
        try:
            await self.bus.publish(command.reply_stream, reply.to_fields())
        except CodeyardError as exc:
            log.warning("poison reply failed", id=message.id, error=str(exc))

    async def refuse(self, message: StreamMessage, error: InvalidCommand) -> None:
        """An entry that is no valid command: an error reply when a reply stream can be
        salvaged from it, else a dead letter."""
        target = salvaged_reply_stream(error)
        if target is None:
            await self.dead_letter(message, f"{error.code}: {error}")
            return
        request_id = error.fields.get("request_id")
        rid = request_id if isinstance(request_id, str) else None
        await self.bus.publish(target, Reply.failure(rid, error).to_fields())
