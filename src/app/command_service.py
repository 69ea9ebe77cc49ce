"""CommandService: consumes ``worker:commands`` and answers every entry exactly once.

Delivery: one consumer group (``codeyard-managers``) shared by every manager process, one
consumer per process (host + pid). A read loop takes new entries; a reclaim loop pages
through ``claim_stale`` and takes over entries another consumer (a dead process) left
pending longer than ``min_idle_s``. Each entry ends in exactly one of: a reply on its reply
stream, a copy forwarded to another manager's stream (:class:`Forward`: that manager
replies), or a dead-letter entry (no reply stream can be derived, or it was delivered more
than ``max_deliveries`` times). Only then is it ACKed, so a crash anywhere before leaves it
pending for the reclaim loop: nothing is lost.

Concurrency: up to ``concurrency`` entries are handled at once (a create may wait minutes
for an image build), both loops drawing on one pool of slots and never taking more entries
than there are free slots. So the order between commands is *not* kept: a later command may
be answered first. Two commands naming the same worker may run at the same time; the
handler must serialize per worker (the worker manager does).

Exactly once *in effect*: replies are keyed by ``request_id``. Before running a command
the service looks for a reply to that request id on its reply stream; a re-delivered
command that was already answered (crash between the reply and the ACK) is ACKed without
running again. The one window left is a crash after the handler's effect (or a forward)
and before the reply (or the ACK): handlers close it by being idempotent per request (a
create carries or derives its worker id; a delete of a deleted worker succeeds), and a
command forwarded twice is answered once by its target, whose reply check skips the copy.
Trimming: the reclaim loop trims the command stream (``trim_acked``) at most every
``trim_interval_s``; the bus removes only entries the group is done with, never a pending
one, so a dead consumer's entry survives until it is reclaimed and ACKed. A failed trim is
logged and retried at the next interval. The dead-letter stream is capped at
``dead_letter_maxlen`` entries.

Two processes never run one entry at the same time as long as ``min_idle_s`` exceeds the
longest handler run; within a process an in-flight set keeps the reclaim loop off entries
already being handled.

The handler is an application-level protocol (:class:`CommandHandler`), not a port: its
implementation is the worker manager (app logic composing ports), not a technology
adapter, and nothing outside ``codeyard.app`` needs to name it.
"""

from __future__ import annotations

import collections
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus
from pydantic import JsonValue

from codeyard.app.command_dead_letter import DeadLetters, already_replied
from codeyard.domain.commands import AnyCommand, Reply, parse_command
from codeyard.domain.errors import (
    CodeyardError,
    ForwardLoop,
    InvalidCommand,
    InvalidInput,
    NotFound,
)
from codeyard.domain.streams import COMMANDS_STREAM, DEAD_LETTER_STREAM, StreamMessage
from codeyard.ports.event_bus import EventBus

log = structlog.get_logger(__name__)

#: Entry field counting how many times an entry was forwarded (absent: never).
FORWARDED_FIELD = "forwarded"
#: How many finished entry ids a service remembers (see ``CommandService._done``).
_DONE_MEMORY = 10_000
#: Longest wait between retries of an entry that failed on transport trouble.
_MAX_RETRY_S = 10.0


@dataclass(frozen=True)
class Forward:
    """Returned by a handler: re-publish this entry, unchanged, on ``stream``."""

    stream: str


class CommandHandler(Protocol):
    """Runs one parsed command; returns the JSON result, or a :class:`Forward` when another
    manager must run it, or raises a CodeyardError. Called concurrently, also for commands
    naming the same worker: serializing those is the handler's job."""

    async def handle(self, command: AnyCommand) -> JsonValue | Forward: ...


def default_consumer_name() -> str:
    """Unique per process on one host; hosts are told apart by name."""
    return f"{socket.gethostname()}-{os.getpid()}"


def forward_count(fields: Mapping[str, str]) -> int:
    """How many times an entry was forwarded; a garbled counter counts as never."""
    try:
        return max(0, int(fields.get(FORWARDED_FIELD, "0")))
    except ValueError:
        return 0


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
    #: Entries handled at once by this process.
    concurrency: int = 16
    #: A command its handler wants forwarded more often than this gets a ForwardLoop reply.
    max_forwards: int = 3
    #: Seconds between trims of ACKed entries off the command stream; 0 disables trimming.
    trim_interval_s: float = 30.0
    #: Dead letters kept (approximate trimming); ``None``: unbounded.
    dead_letter_maxlen: int | None = 10_000

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_forwards < 0:
            raise InvalidInput(
                "concurrency must be >= 1 and max_forwards >= 0",
                concurrency=self.concurrency,
                max_forwards=self.max_forwards,
            )
        if self.trim_interval_s < 0 or (
            self.dead_letter_maxlen is not None and self.dead_letter_maxlen < 1
        ):
            raise InvalidInput(
                "trim_interval_s must be >= 0 and dead_letter_maxlen >= 1",
                trim_interval_s=self.trim_interval_s,
                dead_letter_maxlen=self.dead_letter_maxlen,
            )


class _Slots:
    """Handler slots: a slot is taken before an entry is read or claimed, so a loop never
    holds entries it cannot start, and given back when the entry's handling ends."""

    def __init__(self, size: int) -> None:
        self._semaphore = anyio.Semaphore(size)

    async def take(self, most: int) -> int:
        """Wait for one free slot, then take up to ``most`` without waiting; how many."""
        await self._semaphore.acquire()
        held = 1
        while held < most:
            try:
                self._semaphore.acquire_nowait()
            except anyio.WouldBlock:
                break
            held += 1
        return held

    def give_back(self, count: int) -> None:
        for _ in range(count):
            self._semaphore.release()


class CommandService:
    def __init__(
        self, bus: EventBus, handler: CommandHandler, config: CommandServiceConfig | None = None
    ) -> None:
        self._bus = bus
        self._handler = handler
        self.config = cfg = config or CommandServiceConfig()
        self._dead = DeadLetters(
            bus, cfg.dead_letter_stream, cfg.consumer, cfg.max_deliveries, cfg.dead_letter_maxlen
        )
        self._slots = _Slots(cfg.concurrency)
        # Entry ids this process is handling now: the reclaim loop must not run them twice.
        self._in_flight: set[str] = set()
        # Entry ids this process finished lately. A reclaim pass can claim an entry on the
        # server just before its handler here ACKs it; without this it would run again
        # (harmless for replies, which are checked, but a dead letter would be doubled).
        self._done: collections.deque[str] = collections.deque(maxlen=_DONE_MEMORY)
        self._done_set: set[str] = set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled. Cancellation cancels the handlers running; their entries
        stay pending (no loss)."""
        cfg = self.config
        await self._bus.ensure_group(cfg.stream, cfg.group)
        log.info("command service started", group=cfg.group, consumer=cfg.consumer)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._read_loop, tg)
            tg.start_soon(self._reclaim_loop)
            task_status.started()

    # --- loops -----------------------------------------------------------------------------

    async def _read_loop(self, tg: TaskGroup) -> None:
        while True:
            try:
                await self._read_once(tg)
            except CodeyardError as exc:
                await self._recover(exc)

    async def _read_once(self, tg: TaskGroup) -> None:
        """Read as many new entries as there are free slots and start them in ``tg``."""
        cfg = self.config
        held = await self._slots.take(cfg.batch)
        try:
            messages = await self._bus.read_group(
                cfg.stream, cfg.group, cfg.consumer, count=held, block_s=cfg.block_s
            )
        except BaseException:
            self._slots.give_back(held)
            raise
        self._slots.give_back(held - len(messages))
        for message in messages:
            self._start(tg, message)

    async def _reclaim_loop(self) -> None:
        interval = self.config.trim_interval_s
        # The first trim waits a full interval: right after start nothing new was ACKed.
        next_trim = anyio.current_time() + interval
        while True:
            try:
                await self.reclaim_once()
            except CodeyardError as exc:
                await self._recover(exc)
            if interval > 0 and anyio.current_time() >= next_trim:
                await self.trim_once()
                next_trim = anyio.current_time() + interval
            await anyio.sleep(self.config.reclaim_interval_s)

    async def trim_once(self) -> int:
        """Trim ACKed entries off the command stream; how many went. Never raises for a
        failed trim (logged): trimming only saves memory, the next interval retries."""
        cfg = self.config
        try:
            removed = await self._bus.trim_acked(cfg.stream, cfg.group)
        except Exception:  # not BaseException: cancellation always propagates
            log.warning("command stream trim failed", stream=cfg.stream, exc_info=True)
            return 0
        if removed:
            log.debug("command stream trimmed", stream=cfg.stream, removed=removed)
        return removed

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
        """One full pass over the pending list; returns how many entries were taken over,
        once they are handled (concurrently, within the shared slots)."""
        cfg = self.config
        cursor, taken = "0-0", 0
        failure: CodeyardError | None = None
        async with anyio.create_task_group() as tg:
            while True:
                held = await self._slots.take(cfg.batch)
                try:
                    page = await self._bus.claim_stale(
                        cfg.stream,
                        cfg.group,
                        cfg.consumer,
                        min_idle_s=cfg.min_idle_s,
                        cursor=cursor,
                        count=held,
                    )
                except BaseException as exc:
                    self._slots.give_back(held)
                    if not isinstance(exc, CodeyardError):
                        raise
                    # Raised after the task group, so that it is not wrapped in a group.
                    failure = exc
                    break
                if page.deleted_ids:  # trimmed before anyone ACKed them: nothing left to run
                    log.warning("pending commands were trimmed", ids=list(page.deleted_ids))
                fresh = [
                    m
                    for m in page.messages
                    if m.id not in self._in_flight and m.id not in self._done_set
                ]
                self._slots.give_back(held - len(fresh))
                for message in fresh:
                    self._start(tg, message)
                taken += len(fresh)
                cursor = page.cursor
                if cursor == "0-0":
                    break
        if failure is not None:
            raise failure
        return taken

    # --- one entry -------------------------------------------------------------------------

    def _remember_done(self, entry_id: str) -> None:
        if len(self._done) == self._done.maxlen:
            self._done_set.discard(self._done[0])
        self._done.append(entry_id)
        self._done_set.add(entry_id)

    def _start(self, tg: TaskGroup, message: StreamMessage) -> None:
        """Handle ``message`` in ``tg`` on a slot already taken. Marked in flight before
        any await, so that no reclaim pass can start it a second time."""
        self._in_flight.add(message.id)
        tg.start_soon(self._process_safely, message, name=f"command {message.id}")

    async def _process_safely(self, message: StreamMessage) -> None:
        """Never raises for one bad entry: what failed stays pending and is retried."""
        try:
            await self._process_retrying(message)
            self._remember_done(message.id)
        except CodeyardError as exc:  # transport trouble that outlasted the retries
            log.warning("command left pending", id=message.id, error=str(exc))
        except Exception:  # a bug: leave it pending; max_deliveries ends the loop
            log.exception("command processing failed", id=message.id)
        finally:
            self._in_flight.discard(message.id)
            self._slots.give_back(1)

    async def _process_retrying(self, message: StreamMessage) -> None:
        """:meth:`process`, retried with back-off on transport trouble (Redis restarting).
        Left to the reclaim loop, an entry this process still holds would wait
        ``min_idle_s`` (minutes) before anyone took it over; retrying is safe as
        :meth:`process` is (a reply already published is not made twice). Gives up (the
        entry stays pending) halfway to ``min_idle_s``, well before another manager may
        take the entry over."""
        cfg = self.config
        give_up = anyio.current_time() + cfg.min_idle_s / 2
        delay = cfg.retry_s
        while True:
            try:
                await self.process(message)
            except CodeyardError as exc:
                if anyio.current_time() + delay >= give_up:
                    raise
                log.warning("command retried", id=message.id, error=str(exc), in_s=delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY_S)
            else:
                return

    async def process(self, message: StreamMessage) -> None:
        """Answer, forward or dead-letter one entry, then ACK it."""
        cfg = self.config
        if message.deliveries > cfg.max_deliveries:
            await self._dead.poison(message)
        else:
            try:
                command = parse_command(message.fields)
            except InvalidCommand as exc:
                await self._dead.refuse(message, exc)
            else:
                if not await already_replied(self._bus, command):
                    await self._answer(message, command)
        await self._bus.ack(cfg.stream, cfg.group, [message.id])

    async def _answer(self, message: StreamMessage, command: AnyCommand) -> None:
        outcome = await self._run(command)
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

    async def _run(self, command: AnyCommand) -> Reply | Forward:
        try:
            result = await self._handler.handle(command)
        except CodeyardError as exc:
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
