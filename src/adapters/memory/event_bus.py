"""InMemoryEventBus: an in-process model of Redis streams with consumer groups.

It follows the :class:`~codeyard.ports.event_bus.EventBus` contract the way Redis does, so
the contract suite runs unchanged against both adapters:

- ids are ``<ms>-<seq>`` from the injected clock, strictly increasing per stream (the
  sequence grows when the clock does not move, as in Redis);
- ``maxlen`` trims exactly to ``maxlen`` (Redis' ``MAXLEN ~`` keeps at least as many);
- an ``idempotent`` ``publish_many`` is a repeat when the stream's newest entry has the
  fields of its last entry, compared in order (as the Redis script compares them);
- a consumer group keeps a last-delivered id and a pending entries list (PEL) in id order,
  each entry with its owner, delivery count and last delivery time; trimmed or deleted
  entries (``delete_entries``, like ``XDEL``) stay in the PEL until ``claim_stale``
  reports them as deleted (``XAUTOCLAIM`` in Redis 7);
- ``trim_acked`` cuts below the minimum, over all groups, of the oldest pending id and the
  last-delivered id + 1, like the Redis adapter's ``XTRIM MINID``;
- ``claim_stale`` scans at most ``10 * count`` PEL entries per page, like ``XAUTOCLAIM``;
  ``keep_alive`` restarts the idle time of the caller's own pending entries still in the
  stream and leaves their delivery count, like the Redis adapter's ``XCLAIM ... JUSTID``.

Idle times come from the injected :class:`~codeyard.ports.clock.Clock` (tests use
``ManualClock``); blocking waits use the event loop's real time. Waiters sleep on a
per-stream :class:`anyio.Event` that ``publish`` and ``delete_stream`` set; the entries are
taken without any await in between, so cancelling a blocked read never loses one.
Single event loop only (no thread safety), like any anyio object.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from datetime import timedelta

import anyio
import anyio.lowlevel

from codeyard.adapters.memory._streams import (
    Group,
    Pending,
    Stream,
    done_below,
    entry_id_of,
    fmt_id,
    parse_id,
    positive,
)
from codeyard.adapters.memory.clock import SystemClock
from codeyard.domain.errors import InvalidInput, NotFound
from codeyard.domain.streams import PendingPage, StreamMessage
from codeyard.ports.clock import Clock


class InMemoryEventBus:
    """Redis-streams semantics in process memory; see the module docstring."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._streams: dict[str, Stream] = {}
        # One event per stream that somebody waits on; set and dropped on every change.
        self._wakeups: dict[str, anyio.Event] = {}

    # --- plain streams ---------------------------------------------------------------------

    async def publish(
        self,
        stream: str,
        fields: Mapping[str, str],
        *,
        maxlen: int | None = None,
    ) -> str:
        ids = await self.publish_many(stream, [fields], maxlen=maxlen)
        return ids[-1]

    async def publish_many(
        self,
        stream: str,
        entries: Sequence[Mapping[str, str]],
        *,
        maxlen: int | None = None,
        idempotent: bool = False,
    ) -> list[str]:
        if any(not fields for fields in entries):
            raise InvalidInput("a stream entry needs at least one field", stream=stream)
        if maxlen is not None:
            positive(maxlen, "maxlen")
        await anyio.lowlevel.checkpoint()
        if not entries:
            return []
        # No await from here on: the entries go in together (Redis: one atomic script).
        state = self._streams.setdefault(stream, Stream())
        newest = list(state.entries[-1][1].items()) if state.entries else None
        if idempotent and newest == list(entries[-1].items()):  # in order, as Redis compares
            return [fmt_id(k) for k, _ in state.entries[-len(entries) :]]  # a repeated call
        ms = int(self._clock.now().timestamp() * 1000)
        ids: list[str] = []
        for fields in entries:
            last_ms, last_seq = state.last_id
            new_id = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
            state.last_id = new_id
            state.entries.append((new_id, dict(fields)))
            ids.append(fmt_id(new_id))
        if maxlen is not None and len(state.entries) > maxlen:
            del state.entries[: len(state.entries) - maxlen]
        self._wake(stream)
        return ids

    async def read(
        self, stream: str, *, after: str = "0-0", count: int = 100, block_s: float | None = None
    ) -> list[StreamMessage]:
        positive(count, "count")
        await anyio.lowlevel.checkpoint()
        state = self._streams.get(stream)
        start = (state.last_id if state else (0, 0)) if after == "$" else parse_id(after, "after")
        deadline = self._deadline(block_s)
        while True:
            state = self._streams.get(stream)
            if state is not None:
                i = state.index_after(start)
                found = state.entries[i : i + count]
                if found:
                    return [StreamMessage(stream=stream, id=fmt_id(k), fields=v) for k, v in found]
            if not await self._wait(stream, deadline):
                return []

    async def delete_entries(self, stream: str, ids: Sequence[str]) -> int:
        parsed = {parse_id(i, "delete_entries") for i in ids}
        await anyio.lowlevel.checkpoint()
        state = self._streams.get(stream)
        if state is None or not parsed:
            return 0
        # Consumer groups are left alone, as XDEL does: a pending one stays in the PEL.
        kept = [entry for entry in state.entries if entry[0] not in parsed]
        removed = len(state.entries) - len(kept)
        state.entries = kept
        return removed

    async def length(self, stream: str) -> int:
        await anyio.lowlevel.checkpoint()
        state = self._streams.get(stream)
        return len(state.entries) if state else 0

    async def delete_stream(self, stream: str) -> None:
        await anyio.lowlevel.checkpoint()
        if self._streams.pop(stream, None) is not None:
            self._wake(stream)

    # --- consumer groups -------------------------------------------------------------------

    async def ensure_group(self, stream: str, group: str, *, start: str = "0-0") -> None:
        begin = None if start == "$" else parse_id(start, "start")
        await anyio.lowlevel.checkpoint()
        state = self._streams.setdefault(stream, Stream())
        if group not in state.groups:
            state.groups[group] = Group(last_delivered=state.last_id if begin is None else begin)

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int = 10,
        block_s: float | None = None,
    ) -> list[StreamMessage]:
        positive(count, "count")
        await anyio.lowlevel.checkpoint()
        deadline = self._deadline(block_s)
        while True:
            # Looked up again after every wait: the stream may have been deleted meanwhile.
            state, cg = self._group(stream, group)
            i = state.index_after(cg.last_delivered)
            found = state.entries[i : i + count]
            if found:
                now = self._clock.now()
                for entry_id, _ in found:
                    cg.pending[entry_id] = Pending(consumer, 1, now)
                cg.last_delivered = found[-1][0]
                return [
                    StreamMessage(stream=stream, id=fmt_id(k), fields=v, deliveries=1)
                    for k, v in found
                ]
            if not await self._wait(stream, deadline):
                return []

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        parsed = [parse_id(i, "ack") for i in ids]
        await anyio.lowlevel.checkpoint()
        state = self._streams.get(stream)
        cg = state.groups.get(group) if state else None
        if cg is None:
            return 0
        return sum(1 for entry_id in parsed if cg.pending.pop(entry_id, None) is not None)

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
        positive(count, "count")
        if min_idle_s < 0:
            raise InvalidInput("min_idle_s must not be negative", value=min_idle_s)
        start = parse_id(cursor, "cursor")
        await anyio.lowlevel.checkpoint()
        state, cg = self._group(stream, group)
        now = self._clock.now()
        min_idle = timedelta(seconds=min_idle_s)
        claimed: list[StreamMessage] = []
        deleted: list[str] = []
        remaining, attempts = count, count * 10
        candidates = sorted(k for k in cg.pending if k >= start)
        next_pos = len(candidates)
        for pos, entry_id in enumerate(candidates):
            if remaining == 0 or attempts == 0:
                next_pos = pos
                break
            attempts -= 1
            fields = state.get(entry_id)
            if fields is None:  # trimmed away: drop from the PEL and report it
                del cg.pending[entry_id]
                deleted.append(fmt_id(entry_id))
                remaining -= 1
                continue
            entry = cg.pending[entry_id]
            if now - entry.delivered_at < min_idle:
                continue
            entry.consumer, entry.delivered_at = consumer, now
            entry.deliveries += 1
            remaining -= 1
            claimed.append(
                StreamMessage(
                    stream=stream, id=fmt_id(entry_id), fields=fields, deliveries=entry.deliveries
                )
            )
        next_cursor = fmt_id(candidates[next_pos]) if next_pos < len(candidates) else "0-0"
        return PendingPage(cursor=next_cursor, messages=tuple(claimed), deleted_ids=tuple(deleted))

    async def keep_alive(
        self, stream: str, group: str, consumer: str, ids: Sequence[str]
    ) -> list[str]:
        parsed = [parse_id(i, "keep_alive") for i in ids]
        await anyio.lowlevel.checkpoint()
        if not parsed:
            return []
        state, cg = self._group(stream, group)
        now = self._clock.now()
        kept: list[str] = []
        for raw, entry_id in zip(ids, parsed, strict=True):
            entry = cg.pending.get(entry_id)
            if entry is None or entry.consumer != consumer or state.get(entry_id) is None:
                continue  # taken over, acked, unknown or deleted: see the port
            entry.delivered_at = now  # the idle time only: no delivery counted
            kept.append(raw)
        return kept

    async def pending_count(self, stream: str, group: str) -> int:
        await anyio.lowlevel.checkpoint()
        return len(self._group(stream, group)[1].pending)

    async def trim_acked(self, stream: str, group: str) -> int:
        await anyio.lowlevel.checkpoint()
        state = self._streams.get(stream)
        if state is None or group not in state.groups:
            return 0
        # Below every group's oldest pending entry and past none of its undelivered ones.
        bound = min(done_below(cg) for cg in state.groups.values())
        cut = bisect_left(state.entries, bound, key=entry_id_of)
        del state.entries[:cut]
        return cut

    # --- internals -------------------------------------------------------------------------

    def _group(self, stream: str, group: str) -> tuple[Stream, Group]:
        state = self._streams.get(stream)
        cg = state.groups.get(group) if state else None
        if state is None or cg is None:
            raise NotFound("no such stream or consumer group", stream=stream, group=group)
        return state, cg

    @staticmethod
    def _deadline(block_s: float | None) -> float | None:
        if block_s is None or block_s <= 0:
            return None
        return anyio.current_time() + block_s

    async def _wait(self, stream: str, deadline: float | None) -> bool:
        """Sleep until ``stream`` changes; False when the deadline passed (or none was set)."""
        if deadline is None:
            return False
        remaining = deadline - anyio.current_time()
        if remaining <= 0:
            return False
        event = self._wakeups.get(stream)
        if event is None:
            event = self._wakeups[stream] = anyio.Event()
        with anyio.move_on_after(remaining):
            await event.wait()
        return True

    def _wake(self, stream: str) -> None:
        event = self._wakeups.pop(stream, None)
        if event is not None:
            event.set()
