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
handler must serialize per worker (the worker manager does). An entry waiting for a
store to come back keeps its slot (:mod:`codeyard.app.command_retry` says why).

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

Slow is not dead: a keep-alive loop resets the idle time of every entry this process is
handling every ``min_idle_s / 3`` (``EventBus.keep_alive``: no delivery counted), so
neither this process' reclaim loop nor another manager's ever sees a slow command idle:
it is not run twice and its delivery count stays where it was, so a command slower than
``max_deliveries x min_idle_s`` is not dead-lettered as poison. Once the process dies
(or is cancelled) the keep-alives stop, and its entries are taken over ``min_idle_s``
later, a delivery counted each time as before. So two processes never run one entry at
the same time as long as this one reaches the bus at least once per ``min_idle_s``; an
outage longer than that (transport retries end at ``min_idle_s / 2``) may let another
manager take over an entry still running here (logged). Within a process an in-flight set
keeps the reclaim loop off entries already being handled.

One entry's handling (reply, forward, dead letter, retries) is
:class:`~codeyard.app.command_entry.EntryProcessor`; this module is delivery: the read and
reclaim loops, the slots, trimming.
"""

from __future__ import annotations

import collections

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from codeyard.app.command_config import CommandServiceConfig, default_consumer_name
from codeyard.app.command_entry import (
    FORWARDED_FIELD,
    CommandHandler,
    EntryProcessor,
    Forward,
    forward_count,
)
from codeyard.domain.errors import CodeyardError, NotFound
from codeyard.domain.streams import StreamMessage
from codeyard.ports.event_bus import EventBus

# Re-exported: callers name them from here (the service's public surface).
__all__ = [
    "FORWARDED_FIELD",
    "CommandHandler",
    "CommandService",
    "CommandServiceConfig",
    "Forward",
    "default_consumer_name",
    "forward_count",
]

log = structlog.get_logger(__name__)

#: How many finished entry ids a service remembers (see ``CommandService._done``).
_DONE_MEMORY = 10_000


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
        self.config = cfg = config or CommandServiceConfig()
        self._entries = EntryProcessor(bus, handler, cfg)
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
            if cfg.min_idle_s > 0:  # 0: every pending entry is stale at once anyway
                tg.start_soon(self._keep_alive_loop)
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

    async def _keep_alive_loop(self) -> None:
        # A third of min_idle_s: two keep-alives may fail or come late before anyone
        # may take an entry over.
        while True:
            await anyio.sleep(self.config.min_idle_s / 3)
            await self.keep_alive_once()

    async def keep_alive_once(self) -> int:
        """Reset the idle time of the entries this process is handling (module doc);
        how many were reset. Never raises for a failed call (logged): the next one
        comes ``min_idle_s / 3`` later, well before a takeover."""
        cfg = self.config
        ids = sorted(self._in_flight)
        if not ids:
            return 0
        try:
            kept = await self._bus.keep_alive(cfg.stream, cfg.group, cfg.consumer, ids)
        except CodeyardError as exc:
            log.warning("cannot keep commands in flight alive", error=str(exc), ids=len(ids))
            return 0
        # Still handled here but no longer pending on this consumer: another one took it
        # over (this process was silent past min_idle_s), or its ACK raced this call.
        still = set(kept)
        lost = [i for i in ids if i in self._in_flight and i not in still]
        if lost:
            log.warning("commands in flight no longer pending here", ids=lost)
        return len(kept)

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
            await self._entries.process_retrying(message)
            self._remember_done(message.id)
        except CodeyardError as exc:  # transport trouble that outlasted the retries
            log.warning("command left pending", id=message.id, error=str(exc))
        except Exception:  # a bug: leave it pending; max_deliveries ends the loop
            log.exception("command processing failed", id=message.id)
        finally:
            self._in_flight.discard(message.id)
            self._slots.give_back(1)
