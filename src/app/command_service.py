"""CommandService: consumes ``worker:commands`` and answers every entry exactly once.

Delivery: one consumer group (``codeyard-managers``) shared by every manager process, one
consumer per process (host + pid). A read loop takes new entries; a reclaim loop pages
through ``claim_stale`` and takes over entries another consumer (a dead process) left
pending longer than ``min_idle_s``. Each entry ends in exactly one of: a reply on its reply
stream, or a dead-letter entry (no reply stream can be derived, or it was delivered more
than ``max_deliveries`` times). Only then is it ACKed, so a crash anywhere before leaves it
pending for the reclaim loop: nothing is lost.

Exactly once *in effect*: replies are keyed by ``request_id``. Before running a command
the service looks for a reply to that request id on its reply stream; a re-delivered
command that was already answered (crash between the reply and the ACK) is ACKed without
running again. The one window left is a crash after the handler's effect and before the
reply: handlers close it by being idempotent per request (a create carries or derives its
worker id; a delete of a deleted worker succeeds). Two processes never run one entry at
the same time as long as ``min_idle_s`` exceeds the longest handler run; within a process
an in-flight set keeps the reclaim loop off entries the read loop is still handling.

The handler is an application-level protocol (:class:`CommandHandler`), not a port: its
implementation is the worker manager (app logic composing ports), not a technology
adapter, and nothing outside ``codeyard.app`` needs to name it.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import structlog
from anyio.abc import TaskStatus
from pydantic import JsonValue

from codeyard.domain.commands import AnyCommand, Reply, parse_command, salvaged_reply_stream
from codeyard.domain.errors import CodeyardError, InvalidCommand, NotFound, PoisonCommand
from codeyard.domain.streams import COMMANDS_STREAM, DEAD_LETTER_STREAM, StreamMessage
from codeyard.ports.event_bus import EventBus

log = structlog.get_logger(__name__)


class CommandHandler(Protocol):
    """Runs one parsed command; returns the JSON result or raises a CodeyardError."""

    async def handle(self, command: AnyCommand) -> JsonValue: ...


def default_consumer_name() -> str:
    """Unique per process on one host; hosts are told apart by name."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class CommandServiceConfig:
    stream: str = COMMANDS_STREAM
    dead_letter_stream: str = DEAD_LETTER_STREAM
    group: str = "codeyard-managers"
    consumer: str = field(default_factory=default_consumer_name)
    batch: int = 10
    block_s: float = 1.0
    #: An entry pending this long on any consumer is taken over. Must exceed the longest
    #: handler run, or a slow (not dead) consumer's entry would run twice.
    min_idle_s: float = 60.0
    reclaim_interval_s: float = 5.0
    #: More deliveries than this make an entry poison: dead-lettered, never run again.
    max_deliveries: int = 5
    #: Back-off after a transport failure (Redis down) before trying again.
    retry_s: float = 1.0


class CommandService:
    def __init__(
        self, bus: EventBus, handler: CommandHandler, config: CommandServiceConfig | None = None
    ) -> None:
        self._bus = bus
        self._handler = handler
        self.config = config or CommandServiceConfig()
        # Entry ids this process is handling now: the reclaim loop must not run them twice.
        self._in_flight: set[str] = set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled. Cancellation leaves the current entry pending (no loss)."""
        cfg = self.config
        await self._bus.ensure_group(cfg.stream, cfg.group)
        log.info("command service started", group=cfg.group, consumer=cfg.consumer)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._read_loop)
            tg.start_soon(self._reclaim_loop)
            task_status.started()

    # --- loops -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        cfg = self.config
        while True:
            try:
                messages = await self._bus.read_group(
                    cfg.stream, cfg.group, cfg.consumer, count=cfg.batch, block_s=cfg.block_s
                )
            except CodeyardError as exc:
                await self._recover(exc)
                continue
            for message in messages:
                await self._process_safely(message)

    async def _reclaim_loop(self) -> None:
        while True:
            try:
                await self.reclaim_once()
            except CodeyardError as exc:
                await self._recover(exc)
            await anyio.sleep(self.config.reclaim_interval_s)

    async def _recover(self, exc: CodeyardError) -> None:
        """After a failed read or claim: recreate a deleted group, else back off."""
        cfg = self.config
        log.warning("command stream trouble", stream=cfg.stream, error=str(exc))
        if isinstance(exc, NotFound):
            try:
                await self._bus.ensure_group(cfg.stream, cfg.group)
            except CodeyardError as again:
                log.warning("cannot recreate the consumer group", error=str(again))
            else:
                return
        await anyio.sleep(cfg.retry_s)

    async def reclaim_once(self) -> int:
        """One full pass over the pending list; returns how many entries were taken over."""
        cfg = self.config
        cursor, taken = "0-0", 0
        while True:
            page = await self._bus.claim_stale(
                cfg.stream,
                cfg.group,
                cfg.consumer,
                min_idle_s=cfg.min_idle_s,
                cursor=cursor,
                count=cfg.batch,
            )
            if page.deleted_ids:  # trimmed before anyone ACKed them: nothing left to run
                log.warning("pending commands were trimmed", ids=list(page.deleted_ids))
            for message in page.messages:
                if message.id in self._in_flight:
                    continue
                taken += 1
                await self._process_safely(message)
            cursor = page.cursor
            if cursor == "0-0":
                return taken

    # --- one entry -------------------------------------------------------------------------

    async def _process_safely(self, message: StreamMessage) -> None:
        """Never raises for one bad entry: what failed stays pending and is retried."""
        self._in_flight.add(message.id)
        try:
            await self.process(message)
        except CodeyardError as exc:  # transport trouble: leave it pending
            log.warning("command left pending", id=message.id, error=str(exc))
        except Exception:  # a bug: leave it pending; max_deliveries ends the loop
            log.exception("command processing failed", id=message.id)
        finally:
            self._in_flight.discard(message.id)

    async def process(self, message: StreamMessage) -> None:
        """Answer (or dead-letter) one entry, then ACK it."""
        cfg = self.config
        if message.deliveries > cfg.max_deliveries:
            await self._poison(message)
        else:
            try:
                command = parse_command(message.fields)
            except InvalidCommand as exc:
                target = salvaged_reply_stream(exc)
                if target is None:
                    await self._dead_letter(message, f"{exc.code}: {exc}")
                else:
                    request_id = exc.fields.get("request_id")
                    rid = request_id if isinstance(request_id, str) else None
                    await self._bus.publish(target, Reply.failure(rid, exc).to_fields())
            else:
                if not await self._already_replied(command):
                    reply = await self._run(command)
                    await self._bus.publish(command.reply_stream, reply.to_fields())
        await self._bus.ack(cfg.stream, cfg.group, [message.id])

    async def _run(self, command: AnyCommand) -> Reply:
        try:
            result = await self._handler.handle(command)
        except CodeyardError as exc:
            return Reply.failure(command.request_id, exc)
        except Exception as exc:  # not BaseException: cancellation always propagates
            log.exception("command handler failed", request_id=command.request_id)
            return Reply.internal(command.request_id, type(exc).__name__)
        try:
            return Reply.success(command.request_id, result)
        except CodeyardError as exc:  # the handler returned something that is not JSON
            return Reply.internal(command.request_id, f"unserializable result: {exc}")

    async def _already_replied(self, command: AnyCommand) -> bool:
        after = "0-0"
        while True:
            entries = await self._bus.read(command.reply_stream, after=after, count=100)
            if not entries:
                return False
            for entry in entries:
                try:
                    if Reply.from_fields(entry.fields).request_id == command.request_id:
                        return True
                except CodeyardError:  # a foreign entry on a shared reply stream
                    continue
            after = entries[-1].id

    async def _poison(self, message: StreamMessage) -> None:
        reason = f"delivered {message.deliveries} times (max {self.config.max_deliveries})"
        try:
            command: AnyCommand | None = parse_command(message.fields)
        except InvalidCommand:
            command = None
        if command is not None and await self._already_replied(command):
            return  # answered before; only the ACK was lost
        await self._dead_letter(message, reason)
        if command is None:
            return
        # Best effort: tell the client, so it does not wait for a reply that never comes.
        reply = Reply.failure(command.request_id, PoisonCommand(reason))
        try:
            await self._bus.publish(command.reply_stream, reply.to_fields())
        except CodeyardError as exc:
            log.warning("poison reply failed", id=message.id, error=str(exc))

    async def _dead_letter(self, message: StreamMessage, reason: str) -> None:
        log.warning("command dead-lettered", id=message.id, reason=reason)
        await self._bus.publish(
            self.config.dead_letter_stream,
            {
                "stream": message.stream,
                "id": message.id,
                "reason": reason,
                "deliveries": str(message.deliveries),
                "consumer": self.config.consumer,
                "entry": json.dumps(message.fields),
            },
        )
