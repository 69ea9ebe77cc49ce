"""EventBus.trim_acked (src/ports/event_bus.py) against both adapters.

Fixtures (``event_bus``, ``clock``, ``let_idle``, ``stream``) come from ``test_event_bus``:
the in-memory model and real Redis. The rule checked everywhere: only entries every group
has delivered and that nobody still has pending go; kept entries keep their ids.
"""

from __future__ import annotations

import anyio
import pytest

from codeyard.domain.streams import parse_stream_id
from codeyard.ports.event_bus import EventBus
from tests.contract import test_event_bus as base
from tests.contract.test_event_bus import IDLE_S, MIN_IDLE_S, LetIdle, ids_of, publish_n

pytestmark = pytest.mark.anyio

# The same fixtures (memory and real Redis), re-exported so pytest finds them here.
clock = base.clock
event_bus = base.event_bus
let_idle = base.let_idle
stream = base.stream

GROUP = "g"


async def all_ids(bus: EventBus, stream: str) -> list[str]:
    return ids_of(await bus.read(stream, count=1000))


async def test_acked_entries_go_pending_and_undelivered_ones_stay(
    event_bus: EventBus, stream: str
) -> None:
    await event_bus.ensure_group(stream, GROUP)
    ids = await publish_n(event_bus, stream, 5)
    delivered = await event_bus.read_group(stream, GROUP, "c1", count=3)
    assert ids_of(delivered) == ids[:3]
    assert await event_bus.ack(stream, GROUP, ids[:2]) == 2

    assert await event_bus.trim_acked(stream, GROUP) == 2
    # Pending ids[2] and undelivered ids[3:] stay, under their original ids.
    assert await all_ids(event_bus, stream) == ids[2:]
    assert await event_bus.trim_acked(stream, GROUP) == 0

    await event_bus.ack(stream, GROUP, [ids[2]])
    assert await event_bus.trim_acked(stream, GROUP) == 1
    assert await all_ids(event_bus, stream) == ids[3:]
    # The group still delivers the rest, and new ids keep growing past the trimmed ones.
    assert ids_of(await event_bus.read_group(stream, GROUP, "c1", count=10)) == ids[3:]
    newer = await event_bus.publish(stream, {"n": "new"})
    assert parse_stream_id(newer) > parse_stream_id(ids[-1])


async def test_an_acked_entry_after_a_pending_one_waits_for_it(
    event_bus: EventBus, stream: str
) -> None:
    await event_bus.ensure_group(stream, GROUP)
    ids = await publish_n(event_bus, stream, 3)
    await event_bus.read_group(stream, GROUP, "c1", count=3)
    await event_bus.ack(stream, GROUP, [ids[0], ids[2]])
    assert await event_bus.trim_acked(stream, GROUP) == 1
    assert await all_ids(event_bus, stream) == ids[1:]


async def test_an_entry_pending_on_a_dead_consumer_stays_until_acked(
    event_bus: EventBus, stream: str, let_idle: LetIdle
) -> None:
    await event_bus.ensure_group(stream, GROUP)
    ids = await publish_n(event_bus, stream, 2)
    await event_bus.read_group(stream, GROUP, "dead", count=10)
    await let_idle(IDLE_S)
    assert await event_bus.trim_acked(stream, GROUP) == 0

    page = await event_bus.claim_stale(stream, GROUP, "live", min_idle_s=MIN_IDLE_S)
    assert ids_of(page.messages) == ids
    assert page.deleted_ids == ()
    assert await event_bus.trim_acked(stream, GROUP) == 0
    assert await all_ids(event_bus, stream) == ids

    await event_bus.ack(stream, GROUP, ids)
    assert await event_bus.trim_acked(stream, GROUP) == 2
    assert await event_bus.length(stream) == 0
    # The emptied stream keeps its group.
    assert await event_bus.pending_count(stream, GROUP) == 0


async def test_missing_stream_or_group_trims_nothing(event_bus: EventBus, stream: str) -> None:
    assert await event_bus.trim_acked(stream, GROUP) == 0
    await event_bus.ensure_group(stream, GROUP)
    ids = await publish_n(event_bus, stream, 2)
    await event_bus.read_group(stream, GROUP, "c1", count=10)
    await event_bus.ack(stream, GROUP, ids)
    assert await event_bus.trim_acked(stream, "no-such-group") == 0
    assert await all_ids(event_bus, stream) == ids
    # A plain stream without any group: nothing is known to be done.
    plain = f"{stream}:plain"
    await publish_n(event_bus, plain, 2)
    assert await event_bus.trim_acked(plain, GROUP) == 0
    assert await event_bus.length(plain) == 2


async def test_every_group_must_be_done_with_an_entry(event_bus: EventBus, stream: str) -> None:
    await event_bus.ensure_group(stream, GROUP)
    await event_bus.ensure_group(stream, "other")
    ids = await publish_n(event_bus, stream, 3)
    await event_bus.read_group(stream, GROUP, "c1", count=10)
    await event_bus.ack(stream, GROUP, ids)
    assert await event_bus.trim_acked(stream, GROUP) == 0  # "other" delivered nothing

    await event_bus.read_group(stream, "other", "c2", count=2)
    await event_bus.ack(stream, "other", ids[:1])
    assert await event_bus.trim_acked(stream, GROUP) == 1
    assert await all_ids(event_bus, stream) == ids[1:]


async def test_entries_a_group_skipped_at_creation_count_as_done(
    event_bus: EventBus, stream: str
) -> None:
    old = await publish_n(event_bus, stream, 2)
    await event_bus.ensure_group(stream, GROUP, start="$")
    new = await publish_n(event_bus, stream, 1)
    assert await event_bus.trim_acked(stream, GROUP) == len(old)
    assert await all_ids(event_bus, stream) == new


async def test_a_concurrent_publish_is_never_trimmed(event_bus: EventBus, stream: str) -> None:
    await event_bus.ensure_group(stream, GROUP)
    old = await publish_n(event_bus, stream, 20)
    await event_bus.read_group(stream, GROUP, "c1", count=100)
    await event_bus.ack(stream, GROUP, old)
    fresh: list[str] = []
    removed: list[int] = []

    async def publisher(i: int) -> None:
        fresh.append(await event_bus.publish(stream, {"n": f"fresh-{i}"}))

    async def trimmer() -> None:
        removed.append(await event_bus.trim_acked(stream, GROUP))

    # Trims interleaved with publishes: whatever order the bus sees, no fresh entry goes.
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(publisher, i)
            tg.start_soon(trimmer)
    assert sum(removed) == len(old)
    assert await all_ids(event_bus, stream) == sorted(fresh, key=parse_stream_id)
