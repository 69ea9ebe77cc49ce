"""EventBus.keep_alive (src/ports/event_bus.py) against both adapters.

Fixtures (``event_bus``, ``clock``, ``let_idle``, ``stream``) come from ``test_event_bus``:
the in-memory model and real Redis. The command service keeps the entries it is handling
alive, so that a slow command is neither taken over nor counted as delivered again.
"""

from __future__ import annotations

import pytest

from codeyard.domain.errors import InvalidInput, NotFound
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


async def test_kept_alive_entries_are_not_stale_and_count_no_delivery(
    event_bus: EventBus, stream: str, let_idle: LetIdle
) -> None:
    await event_bus.ensure_group(stream, GROUP)
    ids = await publish_n(event_bus, stream, 3)
    await event_bus.read_group(stream, GROUP, "c1")
    # Three idle periods, each ended by a keep-alive: never stale in between.
    for _ in range(3):
        await let_idle(IDLE_S)
        assert await event_bus.keep_alive(stream, GROUP, "c1", ids) == ids
        page = await event_bus.claim_stale(stream, GROUP, "c2", min_idle_s=MIN_IDLE_S)
        assert (page.messages, page.deleted_ids) == ((), ())
    # Once c1 goes silent, c2 takes them over: the second delivery, not the fifth.
    await let_idle(IDLE_S)
    page = await event_bus.claim_stale(stream, GROUP, "c2", min_idle_s=MIN_IDLE_S)
    assert ids_of(page.messages) == ids
    assert [m.deliveries for m in page.messages] == [2, 2, 2]
    assert [m.fields for m in page.messages] == [{"n": "0"}, {"n": "1"}, {"n": "2"}]


async def test_only_the_callers_own_pending_entries_still_in_the_stream_are_kept(
    event_bus: EventBus, stream: str, let_idle: LetIdle
) -> None:
    await event_bus.ensure_group(stream, GROUP)
    ids = await publish_n(event_bus, stream, 4)
    await event_bus.read_group(stream, GROUP, "c1")
    await let_idle(IDLE_S)
    taken = await event_bus.claim_stale(stream, GROUP, "c2", min_idle_s=MIN_IDLE_S, count=1)
    assert ids_of(taken.messages) == [ids[0]]
    assert await event_bus.ack(stream, GROUP, [ids[1]]) == 1
    assert await event_bus.delete_entries(stream, [ids[2]]) == 1

    asked = [ids[3], ids[0], ids[1], ids[2], "1-1"]
    assert await event_bus.keep_alive(stream, GROUP, "c1", asked) == [ids[3]]
    # Taken over stays taken over (c2 can keep it alive, c1 cannot take it back), the
    # acked one is not pending again, the deleted one stays pending for claim_stale.
    assert await event_bus.keep_alive(stream, GROUP, "c2", asked) == [ids[0]]
    assert await event_bus.pending_count(stream, GROUP) == 3
    await let_idle(IDLE_S)
    page = await event_bus.claim_stale(stream, GROUP, "c3", min_idle_s=MIN_IDLE_S)
    assert page.deleted_ids == (ids[2],)
    assert [(m.id, m.deliveries) for m in page.messages] == [(ids[0], 3), (ids[3], 2)]
    # Repeating a call changes nothing more.
    for _ in range(2):
        assert await event_bus.keep_alive(stream, GROUP, "c3", ids) == [ids[0], ids[3]]


async def test_keep_alive_edges(event_bus: EventBus, stream: str) -> None:
    # Nothing asked: no round trip, so no error even without a stream or group.
    assert await event_bus.keep_alive(f"{stream}:missing", "nope", "c1", []) == []
    with pytest.raises(NotFound):
        await event_bus.keep_alive(f"{stream}:missing", "nope", "c1", ["1-1"])
    await event_bus.ensure_group(stream, GROUP)
    with pytest.raises(NotFound):
        await event_bus.keep_alive(stream, "nope", "c1", ["1-1"])
    with pytest.raises(InvalidInput):
        await event_bus.keep_alive(stream, GROUP, "c1", ["not-an-id"])
    # A consumer with nothing pending keeps nothing alive.
    (entry_id,) = await publish_n(event_bus, stream, 1)
    assert await event_bus.keep_alive(stream, GROUP, "c1", [entry_id]) == []
