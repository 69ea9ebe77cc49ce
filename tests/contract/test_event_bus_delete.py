"""EventBus.delete_entries (src/ports/event_bus.py) against both adapters.

Fixtures (``event_bus``, ``clock``, ``let_idle``, ``stream``) come from ``test_event_bus``:
the in-memory model and real Redis. The worker wrapper deletes each input entry once it
has ACKed it, so a handled prompt does not stay in Redis.
"""

from __future__ import annotations

import pytest

from codeyard.domain.errors import InvalidInput
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


async def test_deleted_entries_are_gone_and_the_rest_keep_their_ids(
    event_bus: EventBus, stream: str
) -> None:
    ids = await publish_n(event_bus, stream, 5)
    assert await event_bus.delete_entries(stream, [ids[1], ids[3]]) == 2
    assert ids_of(await event_bus.read(stream)) == [ids[0], ids[2], ids[4]]
    assert [m.fields for m in await event_bus.read(stream)] == [{"n": "0"}, {"n": "2"}, {"n": "4"}]
    assert await event_bus.length(stream) == 3
    # Already gone, unknown, nothing asked, no stream: nothing removed.
    assert await event_bus.delete_entries(stream, [ids[1], "1-999999"]) == 0
    assert await event_bus.delete_entries(stream, []) == 0
    assert await event_bus.delete_entries(f"{stream}:missing", [ids[0]]) == 0
    with pytest.raises(InvalidInput):
        await event_bus.delete_entries(stream, ["not-an-id"])
    # Deleting the newest entry does not let a new one reuse its id.
    assert await event_bus.delete_entries(stream, [ids[4]]) == 1
    newer = await event_bus.publish(stream, {"n": "new"})
    assert parse_stream_id(newer) > parse_stream_id(ids[4])


async def test_a_group_skips_deleted_entries_and_acked_then_deleted_ones_are_done(
    event_bus: EventBus, stream: str
) -> None:
    await event_bus.ensure_group(stream, GROUP)
    ids = await publish_n(event_bus, stream, 3)
    (first,) = await event_bus.read_group(stream, GROUP, "c1", count=1)
    assert first.id == ids[0]
    # The worker's order: ACK, then delete. Nothing is left pending or to claim.
    assert await event_bus.ack(stream, GROUP, [first.id]) == 1
    assert await event_bus.delete_entries(stream, [first.id]) == 1
    # An undelivered entry deleted before any read is never delivered.
    assert await event_bus.delete_entries(stream, [ids[1]]) == 1
    assert ids_of(await event_bus.read_group(stream, GROUP, "c1", count=10)) == [ids[2]]
    await event_bus.ack(stream, GROUP, [ids[2]])
    assert await event_bus.pending_count(stream, GROUP) == 0
    assert await event_bus.length(stream) == 1
    assert await event_bus.trim_acked(stream, GROUP) == 1
    assert await event_bus.length(stream) == 0


async def test_a_pending_entry_deleted_before_its_ack_is_reported_by_claim_stale(
    event_bus: EventBus, stream: str, let_idle: LetIdle
) -> None:
    await event_bus.ensure_group(stream, GROUP)
    ids = await publish_n(event_bus, stream, 2)
    taken = await event_bus.read_group(stream, GROUP, "gone", count=2)
    assert ids_of(taken) == ids
    assert await event_bus.delete_entries(stream, [ids[0]]) == 1
    # Delete does not touch the group: the entry stays pending until a claim reports it.
    assert await event_bus.pending_count(stream, GROUP) == 2
    await let_idle(IDLE_S)
    page = await event_bus.claim_stale(stream, GROUP, "c2", min_idle_s=MIN_IDLE_S)
    assert page.deleted_ids == (ids[0],)
    assert ids_of(page.messages) == [ids[1]]
    assert await event_bus.pending_count(stream, GROUP) == 1
