"""EventBus ``publish_many(..., idempotent=True)`` (src/ports/event_bus.py) against both adapters.

Fixtures (``event_bus``, ``clock``, ``stream``) come from ``test_event_bus``: the
in-memory model and real Redis. The worker's BatchingPublisher publishes this way so that
a batch sent again after a lost reply is not appended twice
(tests/integration/test_event_bus_lost_reply.py loses a real reply).
"""

from __future__ import annotations

import pytest

from codeyard.domain.errors import InvalidInput
from codeyard.ports.event_bus import EventBus
from tests.contract import test_event_bus as base
from tests.contract.test_event_bus import ids_of

pytestmark = pytest.mark.anyio

# The same fixtures (memory and real Redis), re-exported so pytest finds them here.
clock = base.clock
event_bus = base.event_bus
stream = base.stream


async def fields_of(bus: EventBus, stream: str) -> list[dict[str, str]]:
    return [dict(m.fields) for m in await bus.read(stream)]


async def test_repeating_the_last_call_appends_nothing_and_returns_its_ids(
    event_bus: EventBus, stream: str
) -> None:
    batch = [{"e": "1"}, {"e": "2"}, {"e": "3"}]
    ids = await event_bus.publish_many(stream, batch, idempotent=True)
    assert await event_bus.publish_many(stream, batch, idempotent=True) == ids
    assert ids_of(await event_bus.read(stream)) == ids
    one = await event_bus.publish_many(stream, [{"e": "4"}], idempotent=True)
    assert await event_bus.publish_many(stream, [{"e": "4"}], idempotent=True) == one
    assert await event_bus.length(stream) == 4
    # With maxlen, too.
    again = await event_bus.publish_many(stream, [{"e": "5"}], maxlen=10, idempotent=True)
    assert await event_bus.publish_many(stream, [{"e": "5"}], maxlen=10, idempotent=True) == again
    assert await fields_of(event_bus, stream) == [{"e": str(n)} for n in range(1, 6)]


async def test_only_an_equal_newest_entry_counts_as_a_repeat(
    event_bus: EventBus, stream: str
) -> None:
    await event_bus.publish_many(stream, [{"e": "1"}, {"e": "2"}], idempotent=True)
    # Its first entry equals the newest, its last does not: a new batch, appended.
    await event_bus.publish_many(stream, [{"e": "2"}, {"e": "3"}], idempotent=True)
    # The same fields in another order are another entry (Redis keeps the order).
    for fields in (
        {"a": "1", "b": "2"},
        {"b": "2", "a": "1"},
        # A field more or less, or another value: appended.
        {"b": "2", "a": "1", "c": "3"},
        {"b": "2", "a": "1"},
        {"b": "2", "a": "9"},
    ):
        await event_bus.publish_many(stream, [fields], idempotent=True)
    assert await event_bus.length(stream) == 9


async def test_an_entry_of_another_publisher_in_between_makes_a_repeat_append_again(
    event_bus: EventBus, stream: str
) -> None:
    # Documented limit: only the newest entry is compared (readers drop repeated events).
    batch = [{"e": "1"}]
    await event_bus.publish_many(stream, batch, idempotent=True)
    await event_bus.publish(stream, {"other": "x"})
    await event_bus.publish_many(stream, batch, idempotent=True)
    assert await fields_of(event_bus, stream) == [{"e": "1"}, {"other": "x"}, {"e": "1"}]


async def test_plain_publishes_append_equal_entries(event_bus: EventBus, stream: str) -> None:
    await event_bus.publish(stream, {"e": "1"})
    await event_bus.publish(stream, {"e": "1"})
    await event_bus.publish_many(stream, [{"e": "1"}])
    await event_bus.publish_many(stream, [{"e": "1"}], idempotent=True)  # the newest is equal
    assert await event_bus.length(stream) == 3


async def test_idempotent_calls_check_their_arguments_like_plain_ones(
    event_bus: EventBus, stream: str
) -> None:
    assert await event_bus.publish_many(stream, [], idempotent=True) == []
    with pytest.raises(InvalidInput):
        await event_bus.publish_many(stream, [{"e": "1"}, {}], idempotent=True)
    with pytest.raises(InvalidInput):
        await event_bus.publish_many(stream, [{}], idempotent=True)
    with pytest.raises(InvalidInput):
        await event_bus.publish_many(stream, [{"e": "1"}], maxlen=0, idempotent=True)
    assert await event_bus.length(stream) == 0
