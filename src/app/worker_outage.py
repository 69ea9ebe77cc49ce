"""A worker process riding out a Redis outage (issue #9: restart Redis mid-run).

The manager, the command service and clients wait out a Redis restart; a worker used to
exit 1 at its first failed bus call. Here every bus call of one worker process goes through
one :class:`OutageGuard` (:class:`OutageBus` wraps the worker's bus):

* **Retry.** A call failing with ``ServiceUnavailable`` (the Redis adapter's category for
  connection errors, timeouts, ``LOADING`` and refused writes) is tried again after a
  capped, jittered exponential back-off, so a worker notices Redis back within
  ``Backoff.max_s`` and hundreds of workers do not reconnect in lock step. Other errors
  and cancellation pass through at once.
* **Bound.** An outage starts at the first failure after a success (of any call of the
  process) and ends at the next success. Once it has lasted ``outage_s`` (setting
  ``worker_redis_outage_s``), calls fail with :class:`RedisOutageTooLong` instead of
  waiting: the worker exits (code 3, :mod:`codeyard.app.worker_cli`) and the manager's
  death handling takes over. The back-off never sleeps past the bound.
* **What waits meanwhile.** The run in progress keeps going: its events pile up in the
  output's bounded buffer (:class:`~codeyard.app.event_publisher.BatchingPublisher`,
  whose task is the one waiting here) and go out in order once Redis answers; an input
  entry is ACKed only after its events are out (the wrapper flushes first). A full
  buffer holds the agent back (backpressure), it drops nothing.
* **Repeats.** Only repeat-safe calls are retried: reads, ``ACK``, ``XDEL``, group
  creation, stream deletion and ``idempotent`` batches (a batch whose reply was lost is
  not appended twice; the worker's publisher is idempotent). Plain publishes are not.
* **A read whose reply was lost.** ``XREADGROUP >`` may have delivered an entry that the
  reply never brought: it stays pending on this consumer, where ``>`` never returns it
  again. So a ``read_group`` retried after a failure first claims the group's pending
  entries (as a restarted wrapper's leftovers are). Meant for a group read by one consumer
  at a time, which a worker's input is.
* **Heartbeats** wait for :meth:`OutageGuard.wait_recovered` as well as their interval,
  so the first one after an outage goes out as soon as Redis is back (the manager marks a
  worker silent for ``worker_heartbeat_timeout_s`` unhealthy, counting only time it could
  read the worker's output itself).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import anyio
import structlog

from codeyard.domain.errors import ServiceUnavailable
from codeyard.domain.streams import PendingPage, StreamMessage, parse_stream_id
from codeyard.ports.event_bus import EventBus

__all__ = ["Backoff", "OutageBus", "OutageGuard", "RedisOutageTooLong"]

log = structlog.get_logger(__name__)

T = TypeVar("T")


class RedisOutageTooLong(ServiceUnavailable):
    """Redis stayed unreachable longer than the worker's outage bound."""

    code = "redis_outage_too_long"
    retryable = False


@dataclass(frozen=True)
class Backoff:
    """Exponential delays from ``first_s`` up to ``max_s``, with "equal jitter": each delay
    is drawn from ``[d/2, d]``, never shorter than half the nominal one."""

    first_s: float = 0.1
    max_s: float = 1.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.first_s <= self.max_s or self.factor < 1:
            msg = "need 0 < first_s <= max_s and factor >= 1"
            raise ValueError(msg)

    def delay(self, attempt: int, rng: random.Random) -> float:
        nominal = min(self.max_s, self.first_s * self.factor ** min(attempt, 64))
        return nominal / 2 + rng.uniform(0, nominal / 2)


class OutageGuard:
    """Retries one process's bus calls through an outage of up to ``outage_s`` (module doc).

    ``monotonic``, ``sleep`` and ``rng`` are injectable for tests."""

    def __init__(
        self,
        outage_s: float,
        *,
        backoff: Backoff | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if outage_s <= 0:
            msg = "outage_s must be > 0"
            raise ValueError(msg)
        self.outage_s = outage_s
        self._backoff = backoff or Backoff()
        self._monotonic = monotonic
        self._sleep = sleep
        self._rng = rng or random.Random()  # jitter, not a secret
        #: When the current outage began (``None``: Redis answered the last call).
        self.down_since: float | None = None
        self._recovered = anyio.Event()

    async def call(self, op: str, attempt_once: Callable[[], Awaitable[T]]) -> T:
        """``attempt_once()``, tried again on ``ServiceUnavailable`` until the bound."""
        attempt = 0
        while True:
            try:
                result = await attempt_once()
            except RedisOutageTooLong:
                raise
            except ServiceUnavailable as exc:
                left = self._failed(op, exc)
                if left <= 0:
                    raise RedisOutageTooLong(
                        f"redis unreachable for more than {self.outage_s:g} s",
                        service="redis",
                        op=op,
                        outage_s=self.outage_s,
                    ) from exc
                await self._sleep(min(self._backoff.delay(attempt, self._rng), left))
                attempt += 1
            else:
                self._answered(op)
                return result

    async def wait_recovered(self) -> None:
        """Return when a call succeeds after an outage (the next one to end)."""
        await self._recovered.wait()

    def _failed(self, op: str, exc: ServiceUnavailable) -> float:
        """Note a failure; the seconds left before the bound."""
        now = self._monotonic()
        if self.down_since is None:
            self.down_since = now
            log.warning(
                "worker: redis unreachable, retrying", op=op, outage_s=self.outage_s, error=str(exc)
            )
        return self.down_since + self.outage_s - now

    def _answered(self, op: str) -> None:
        if self.down_since is None:
            return
        log.info("worker: redis reachable again", op=op, down_s=self._monotonic() - self.down_since)
        self.down_since = None
        self._recovered.set()
        self._recovered = anyio.Event()


class OutageBus:
    """An :class:`EventBus` whose calls go through an :class:`OutageGuard` (module doc)."""

    def __init__(self, bus: EventBus, guard: OutageGuard) -> None:
        self._bus = bus
        self.guard = guard

    async def publish(
        self,
        stream: str,
        fields: Mapping[str, str],
        *,
        maxlen: int | None = None,
    ) -> str:
        # Not retried: a repeat after a lost reply could append it twice.
        return await self._bus.publish(stream, fields, maxlen=maxlen)

    async def publish_many(
        self,
        stream: str,
        entries: Sequence[Mapping[str, str]],
        *,
        maxlen: int | None = None,
        idempotent: bool = False,
    ) -> list[str]:
        async def once() -> list[str]:
            return await self._bus.publish_many(
                stream, entries, maxlen=maxlen, idempotent=idempotent
            )

        if not idempotent:
            return await once()  # a repeat could append it twice: the caller decides
        return await self.guard.call("publish_many", once)

    async def read(
        self, stream: str, *, after: str = "0-0", count: int = 100, block_s: float | None = None
    ) -> list[StreamMessage]:
        return await self.guard.call(
            "read", lambda: self._bus.read(stream, after=after, count=count, block_s=block_s)
        )

    async def ensure_group(self, stream: str, group: str, *, start: str = "0-0") -> None:
        await self.guard.call(
            "ensure_group", lambda: self._bus.ensure_group(stream, group, start=start)
        )

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int = 10,
        block_s: float | None = None,
    ) -> list[StreamMessage]:
        unsure = False  # a failed attempt may have delivered entries (module doc)

        async def once() -> list[StreamMessage]:
            nonlocal unsure
            if unsure:
                pending = await self._pending(stream, group, consumer)
                if pending:
                    return pending
            try:
                return await self._bus.read_group(
                    stream, group, consumer, count=count, block_s=block_s
                )
            except ServiceUnavailable:
                unsure = True
                raise

        return await self.guard.call("read_group", once)

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        return await self.guard.call("ack", lambda: self._bus.ack(stream, group, ids))

    async def claim_stale(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        min_idle_s: float,
        cursor: str = "0-0",
        count: int = 100,
    ) -> PendingPage:
        return await self.guard.call(
            "claim_stale",
            lambda: self._bus.claim_stale(
                stream, group, consumer, min_idle_s=min_idle_s, cursor=cursor, count=count
            ),
        )

    async def keep_alive(
        self, stream: str, group: str, consumer: str, ids: Sequence[str]
    ) -> list[str]:
        return await self.guard.call(
            "keep_alive", lambda: self._bus.keep_alive(stream, group, consumer, ids)
        )

    async def pending_count(self, stream: str, group: str) -> int:
        return await self.guard.call(
            "pending_count", lambda: self._bus.pending_count(stream, group)
        )

    async def trim_acked(self, stream: str, group: str) -> int:
        return await self.guard.call("trim_acked", lambda: self._bus.trim_acked(stream, group))

    async def delete_entries(self, stream: str, ids: Sequence[str]) -> int:
        return await self.guard.call(
            "delete_entries", lambda: self._bus.delete_entries(stream, ids)
        )

    async def length(self, stream: str) -> int:
        return await self.guard.call("length", lambda: self._bus.length(stream))

    async def delete_stream(self, stream: str) -> None:
        await self.guard.call("delete_stream", lambda: self._bus.delete_stream(stream))

    # --- internals -------------------------------------------------------------------------

    async def _pending(self, stream: str, group: str, consumer: str) -> list[StreamMessage]:
        """Every entry pending in ``group``, claimed by ``consumer``, in id order."""
        found: list[StreamMessage] = []
        cursor = "0-0"
        while True:
            page = await self._bus.claim_stale(
                stream, group, consumer, min_idle_s=0.0, cursor=cursor
            )
            found.extend(page.messages)
            cursor = page.cursor
            if cursor == "0-0":
                return sorted(found, key=lambda m: parse_stream_id(m.id))
