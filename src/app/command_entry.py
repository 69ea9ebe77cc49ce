"""One command entry: answered, forwarded or dead-lettered, then ACKed (exactly once in
effect; see :mod:`codeyard.app.command_service` for delivery and
:mod:`codeyard.app.command_retry` for what is retried).

The handler is an application-level protocol (:class:`CommandHandler`), not a port: its
implementation is the worker manager (app logic composing ports), not a technology
adapter, and nothing outside ``codeyard.app`` needs to name it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog
from pydantic import JsonValue

from codeyard.app.command_config import CommandServiceConfig
from codeyard.app.command_dead_letter import DeadLetters, already_replied
from codeyard.app.command_retry import StoreWait, is_store_outage, run_retrying
from codeyard.domain.commands import AnyCommand, Reply, parse_command
from codeyard.domain.errors import CodeyardError, ForwardLoop, InvalidCommand
from codeyard.domain.streams import StreamMessage
from codeyard.ports.event_bus import EventBus

log = structlog.get_logger(__name__)

#: Entry field counting how many times an entry was forwarded (absent: never).
FORWARDED_FIELD = "forwarded"


@dataclass(frozen=True)
class Forward:
    """Returned by a handler: re-publish this entry, unchanged, on ``stream``."""

    stream: str


class CommandHandler(Protocol):
    """Runs one parsed command; returns the JSON result, or a :class:`Forward` when another
    manager must run it, or raises a CodeyardError. Called concurrently, also for commands
    naming the same worker: serializing those is the handler's job. May be called again
    for the same request after a store outage (``ServiceUnavailable``): must be idempotent
    per request."""

    async def handle(self, command: AnyCommand) -> JsonValue | Forward: ...


def forward_count(fields: Mapping[str, str]) -> int:
    """How many times an entry was forwarded; a garbled counter counts as never."""
    try:
        return max(0, int(fields.get(FORWARDED_FIELD, "0")))
    except ValueError:
        return 0


class EntryProcessor:
    """Runs one entry to its end (reply, forward or dead letter) and ACKs it."""

    def __init__(
        self, bus: EventBus, handler: CommandHandler, config: CommandServiceConfig
    ) -> None:
        self._bus = bus
        self._handler = handler
        self.config = cfg = config
        self.dead = DeadLetters(
            bus, cfg.dead_letter_stream, cfg.consumer, cfg.max_deliveries, cfg.dead_letter_maxlen
        )

    async def process_retrying(self, message: StreamMessage) -> None:
        """:meth:`process`, retried in place on transport trouble and store outages
        (:func:`~codeyard.app.command_retry.run_retrying`)."""
        cfg = self.config

        async def attempt(wait: StoreWait) -> None:
            await self.process(message, store_wait=wait)

        await run_retrying(
            attempt,
            retry_s=cfg.retry_s,
            min_idle_s=cfg.min_idle_s,
            store_outage_s=cfg.store_outage_s,
            entry_id=message.id,
        )

    async def process(self, message: StreamMessage, *, store_wait: StoreWait | None = None) -> None:
        """Answer, forward or dead-letter one entry, then ACK it. With ``store_wait`` a
        store outage of the handler raises ``StoreOutage`` while the entry may wait for the
        store; without, it is answered at once."""
        cfg = self.config
        if message.deliveries > cfg.max_deliveries:
            await self.dead.poison(message)
        else:
            try:
                command = parse_command(message.fields)
            except InvalidCommand as exc:
                await self.dead.refuse(message, exc)
            else:
                if not await already_replied(self._bus, command):
                    await self._answer(message, command, store_wait)
        await self._bus.ack(cfg.stream, cfg.group, [message.id])

    async def _answer(
        self, message: StreamMessage, command: AnyCommand, store_wait: StoreWait | None
    ) -> None:
        outcome = await self._run(command, store_wait)
        if isinstance(outcome, Forward):
            count = forward_count(message.fields)
            if count < self.config.max_forwards:
                # The original fields, so the target parses exactly what the client sent.
                fields = {**message.fields, FORWARDED_FIELD: str(count + 1)}
                await self._bus.publish(outcome.stream, fields)
                log.info("command forwarded", id=message.id, stream=outcome.stream)
                return
            loop = ForwardLoop(
                "command forwarded too many times",
                forwarded=count,
                max_forwards=self.config.max_forwards,
                stream=outcome.stream,
            )
            outcome = Reply.failure(command.request_id, loop)
        await self._bus.publish(command.reply_stream, outcome.to_fields())

    async def _run(self, command: AnyCommand, store_wait: StoreWait | None) -> Reply | Forward:
        try:
            result = await self._handler.handle(command)
        except CodeyardError as exc:
            if store_wait is not None and is_store_outage(exc):
                exc = store_wait.outlasted(exc)  # raises StoreOutage while it may wait
            return Reply.failure(command.request_id, exc)
        except Exception as exc:  # not BaseException: cancellation always propagates
            log.exception("command handler failed", request_id=command.request_id)
            return Reply.internal(command.request_id, type(exc).__name__)
        if isinstance(result, Forward):
            return result
        try:
            return Reply.success(command.request_id, result)
        except CodeyardError as exc:  # the handler returned something that is not JSON
            return Reply.internal(command.request_id, f"unserializable result: {exc}")
