"""The EventBus contract (src/ports/event_bus.py), checked against every adapter.

One suite, parametrized over ``event_bus``: the in-memory model and real Redis (an
ephemeral server from ``tests/conftest.py``). Tests never flush Redis: each uses its own
stream names. Idle times advance a ManualClock on the memory bus and really elapse (tens
of milliseconds) on Redis.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest
import redis.asyncio as aioredis

from codeyard.adapters.memory.clock import ManualClock
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.domain.errors import InvalidInput, NotFound
from codeyard.domain.streams import StreamMessage, parse_stream_id
from codeyard.ports.event_bus import EventBus

pytestmark = pytest.mark.anyio

LetIdle = Callable[[float], Awaitable[None]]

#: Idle threshold for claim_stale, and how long tests let entries idle past it.
MIN_IDLE_S = 0.1
IDLE_S = 0.15


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def event_bus(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[EventBus]:
    if request.param == "memory":
        yield InMemoryEventBus(clock)
        return
    redis_url: str = request.getfixturevalue("redis_url")
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield RedisEventBus(client)
    finally:
        await client.aclose()


@pytest.fixture
def let_idle(event_bus: EventBus, clock: ManualClock) -> LetIdle:
    """Make pending entries older by ``seconds``: a clock step in memory, real time on Redis."""

    async def wait(seconds: float) -> None:
        if isinstance(event_bus, InMemoryEventBus):
            clock.advance(seconds)
        else:
            await anyio.sleep(seconds)

    return wait


@pytest.fixture
def stream() -> str:
    return f"test:{uuid.uuid4().hex}"


def ids_of(messages: list[StreamMessage] | tuple[StreamMessage, ...]) -> list[str]:
    return [m.id for m in messages]


async def publish_n(bus: EventBus, stream: str, n: int, *, maxlen: int | None = None) -> list[str]:
    return [await bus.publish(stream, {"n": str(i)}, maxlen=maxlen) for i in range(n)]


# --- plain streams -------------------------------------------------------------------------


async def test_adapter_satisfies_the_port(event_bus: EventBus) -> None:
    assert isinstance(event_bus, EventBus)


async def test_ids_strictly_increase(event_bus: EventBus, stream: str) -> None:
    ids = await publish_n(event_bus, stream, 30)
    keys = [parse_stream_id(i) for i in ids]
    assert all(a < b for a, b in itertools.pairwise(keys))
    assert all(i == f"{ms}-{seq}" for i, (ms, seq) in zip(ids, keys, strict=True))
    assert await event_bus.length(stream) == 30


async def test_read_after_and_count(event_bus: EventBus, stream: str) -> None:
    ids = await publish_n(event_bus, stream, 5)

    everything = await event_bus.read(stream)
    assert ids_of(everything) == ids
    assert [m.fields for m in everything] == [{"n": str(i)} for i in range(5)]
    assert {(m.stream, m.deliveries) for m in everything} == {(stream, 0)}

    assert ids_of(await event_bus.read(stream, after=ids[1], count=2)) == ids[2:4]
    assert ids_of(await event_bus.read(stream, count=1)) == ids[:1]
    assert await event_bus.read(stream, after=ids[-1]) == []
    assert await event_bus.read(f"{stream}:missing") == []
    assert await event_bus.length(f"{stream}:missing") == 0


async def test_blocking_read_wakes_when_another_task_publishes(
    event_bus: EventBus, stream: str
) -> None:
    first = await event_bus.publish(stream, {"n": "0"})
    got: list[StreamMessage] = []

    async def reader() -> None:
        got.extend(await event_bus.read(stream, after=first, block_s=5))

    started = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.sleep(0.1)
        assert got == []
        second = await event_bus.publish(stream, {"n": "1"})
    assert ids_of(got) == [second]
    assert anyio.current_time() - started < 2


async def test_block_timeout_returns_empty(event_bus: EventBus, stream: str) -> None:
    await event_bus.ensure_group(stream, "g")
    started = anyio.current_time()
    assert await event_bus.read(stream, block_s=0.15) == []
    assert await event_bus.read_group(stream, "g", "c1", block_s=0.15) == []
    elapsed = anyio.current_time() - started
    assert 0.25 <= elapsed < 2
    # block_s=None does not wait at all.
    started = anyio.current_time()
    assert await event_bus.read(stream) == []
    assert await event_bus.read_group(stream, "g", "c1") == []
    assert anyio.current_time() - started < 0.1


async def test_maxlen_trims_oldest_but_never_below_maxlen(event_bus: EventBus, stream: str) -> None:
    ids = await publish_n(event_bus, stream, 250, maxlen=10)
    kept = await event_bus.length(stream)
    assert 10 <= kept < 250
    # What survives is exactly the newest `kept` entries, in order.
    assert ids_of(await event_bus.read(stream, count=1000)) == ids[-kept:]


async def test_publish_many_appends_in_order_after_earlier_entries(
    event_bus: EventBus, stream: str
) -> None:
    first = await event_bus.publish(stream, {"n": "first"})
    batch = [{"n": str(i), "kind": "batch"} for i in range(50)]
    ids = await event_bus.publish_many(stream, batch)
    last = await event_bus.publish(stream, {"n": "last"})
    keys = [parse_stream_id(i) for i in [first, *ids, last]]
    assert all(a < b for a, b in itertools.pairwise(keys))
    everything = await event_bus.read(stream, count=1000)
    assert ids_of(everything) == [first, *ids, last]
    assert [m.fields for m in everything] == [{"n": "first"}, *batch, {"n": "last"}]


async def test_publish_many_of_nothing_appends_nothing(event_bus: EventBus, stream: str) -> None:
    assert await event_bus.publish_many(stream, []) == []
    assert await event_bus.length(stream) == 0
    assert await event_bus.read(stream) == []


async def test_publish_many_refuses_an_empty_entry_and_appends_none(
    event_bus: EventBus, stream: str
) -> None:
    with pytest.raises(InvalidInput):
        await event_bus.publish_many(stream, [{"k": "v"}, {}])
    with pytest.raises(InvalidInput):
        await event_bus.publish_many(stream, [{"k": "v"}], maxlen=0)
    assert await event_bus.length(stream) == 0


async def test_publish_many_trims_but_never_below_maxlen(event_bus: EventBus, stream: str) -> None:
    ids = await event_bus.publish_many(stream, [{"n": str(i)} for i in range(250)], maxlen=10)
    kept = await event_bus.length(stream)
    assert 10 <= kept < 250
    assert ids_of(await event_bus.read(stream, count=1000)) == ids[-kept:]


async def test_concurrent_batches_do_not_interleave(event_bus: EventBus, stream: str) -> None:
    batches: dict[int, list[str]] = {}

    async def producer(p: int) -> None:
        for b in range(5):
            entries = [{"p": str(p), "b": str(b), "i": str(i)} for i in range(20)]
            batches[p * 10 + b] = await event_bus.publish_many(stream, entries)

    async with anyio.create_task_group() as tg:
        for p in range(4):
            tg.start_soon(producer, p)
    stored = ids_of(await event_bus.read(stream, count=1000))
    assert sorted(stored, key=parse_stream_id) == stored
    assert len(stored) == 4 * 5 * 20
    for ids in batches.values():
        start = stored.index(ids[0])
        assert stored[start : start + len(ids)] == ids


async def test_blocking_read_wakes_on_publish_many(event_bus: EventBus, stream: str) -> None:
    got: list[StreamMessage] = []

    async def reader() -> None:
        with anyio.fail_after(5):
            while len(got) < 3:
                after = got[-1].id if got else "0-0"
                got.extend(await event_bus.read(stream, after=after, block_s=5))

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        await anyio.sleep(0.1)
        ids = await event_bus.publish_many(stream, [{"n": str(i)} for i in range(3)])
    assert ids_of(got) == ids


async def test_delete_stream_is_idempotent_and_removes_groups(
    event_bus: EventBus, stream: str
) -> None:
    await event_bus.delete_stream(stream)  # missing: no error
    entry_id = await event_bus.publish(stream, {"k": "v"})
    await event_bus.ensure_group(stream, "g")
    await event_bus.delete_stream(stream)
    await event_bus.delete_stream(stream)
    assert await event_bus.length(stream) == 0
    assert await event_bus.read(stream) == []
    with pytest.raises(NotFound):
        await event_bus.pending_count(stream, "g")
    assert await event_bus.ack(stream, "g", [entry_id]) == 0


async def test_invalid_arguments_raise_invalid_input(event_bus: EventBus, stream: str) -> None:
    with pytest.raises(InvalidInput):
        await event_bus.publish(stream, {})
    with pytest.raises(InvalidInput):
        await event_bus.read(stream, count=0)
    with pytest.raises(InvalidInput):
        await event_bus.read(stream, after="not-an-id")


# --- consumer groups -----------------------------------------------------------------------


async def test_ensure_group_is_idempotent_and_creates_the_stream(
    event_bus: EventBus, stream: str
) -> None:
    await event_bus.ensure_group(stream, "g")
    assert await event_bus.length(stream) == 0
    ids = await publish_n(event_bus, stream, 2)
    assert ids_of(await event_bus.read_group(stream, "g", "c1")) == ids
    await event_bus.ensure_group(stream, "g")  # does not reset the group
    assert await event_bus.read_group(stream, "g", "c1") == []
    assert await event_bus.pending_count(stream, "g") == 2


async def test_group_start_positions(event_bus: EventBus, stream: str) -> None:
    old = await publish_n(event_bus, stream, 2)
    await event_bus.ensure_group(stream, "from-start")
    await event_bus.ensure_group(stream, "only-new", start="$")
    new = await event_bus.publish(stream, {"n": "new"})
    assert ids_of(await event_bus.read_group(stream, "from-start", "c")) == [*old, new]
    assert ids_of(await event_bus.read_group(stream, "only-new", "c")) == [new]


async def test_consumers_get_disjoint_entries(event_bus: EventBus, stream: str) -> None:
    await event_bus.ensure_group(stream, "g")
    ids = await publish_n(event_bus, stream, 6)
    first = await event_bus.read_group(stream, "g", "c1", count=4)
    second = await event_bus.read_group(stream, "g", "c2", count=10)
    assert ids_of(first) == ids[:4]
    assert ids_of(second) == ids[4:]
    assert {m.deliveries for m in [*first, *second]} == {1}
    assert await event_bus.read_group(stream, "g", "c1") == []
    assert await event_bus.read_group(stream, "g", "c3") == []


async def test_blocking_read_group_wakes_one_consumer(event_bus: EventBus, stream: str) -> None:
    await event_bus.ensure_group(stream, "g")
    got: dict[str, list[StreamMessage]] = {}

    async def consumer(name: str) -> None:
        got[name] = await event_bus.read_group(stream, "g", name, block_s=0.3)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consumer, "c1")
        tg.start_soon(consumer, "c2")
        await anyio.sleep(0.1)
        entry_id = await event_bus.publish(stream, {"k": "v"})
    # Exactly one consumer got the entry; the other timed out empty.
    assert sorted(ids_of(got["c1"] + got["c2"])) == [entry_id]
    assert await event_bus.pending_count(stream, "g") == 1


async def test_entries_stay_pending_until_acked(event_bus: EventBus, stream: str) -> None:
    await event_bus.ensure_group(stream, "g")
    ids = await publish_n(event_bus, stream, 3)
    assert await event_bus.pending_count(stream, "g") == 0
    assert ids_of(await event_bus.read_group(stream, "g", "c1")) == ids
    assert await event_bus.pending_count(stream, "g") == 3

    assert await event_bus.ack(stream, "g", ids[:2]) == 2
    assert await event_bus.pending_count(stream, "g") == 1
    # Acking again, or unknown ids, is a no-op that counts nothing.
    assert await event_bus.ack(stream, "g", ids[:2]) == 0
    assert await event_bus.ack(stream, "g", ["1-1"]) == 0
    assert await event_bus.ack(stream, "g", []) == 0
    assert await event_bus.ack(stream, "g", [ids[0], ids[2], ids[2]]) == 1
    assert await event_bus.pending_count(stream, "g") == 0
    assert await event_bus.ack(stream, "missing-group", ids) == 0


async def test_missing_group_is_not_found(event_bus: EventBus, stream: str) -> None:
    await event_bus.publish(stream, {"k": "v"})
    with pytest.raises(NotFound):
        await event_bus.read_group(stream, "nope", "c1")
    with pytest.raises(NotFound):
        await event_bus.claim_stale(stream, "nope", "c1", min_idle_s=0)
    with pytest.raises(NotFound):
        await event_bus.pending_count(f"{stream}:missing", "nope")


async def test_claim_stale_pages_transfers_and_counts_deliveries(
    event_bus: EventBus, stream: str, let_idle: LetIdle
) -> None:
    await event_bus.ensure_group(stream, "g")
    ids = await publish_n(event_bus, stream, 5)
    await event_bus.read_group(stream, "g", "c1")

    # Nothing has been idle for 10 s: an empty, finished scan.
    page = await event_bus.claim_stale(stream, "g", "c2", min_idle_s=10)
    assert (page.cursor, page.messages, page.deleted_ids) == ("0-0", (), ())

    await let_idle(IDLE_S)
    pages, cursor, claimed = 0, "0-0", []
    while True:
        page = await event_bus.claim_stale(
            stream, "g", "c2", min_idle_s=MIN_IDLE_S, cursor=cursor, count=2
        )
        pages += 1
        assert len(page.messages) <= 2
        claimed += list(page.messages)
        cursor = page.cursor
        if cursor == "0-0":
            break
        assert pages < 10
    assert pages == 3
    assert ids_of(claimed) == ids
    assert [m.fields for m in claimed] == [{"n": str(i)} for i in range(5)]
    assert {m.deliveries for m in claimed} == {2}

    # The claim restarted the idle time: nobody can take them again right away...
    page = await event_bus.claim_stale(stream, "g", "c3", min_idle_s=MIN_IDLE_S)
    assert page.messages == ()
    # ...but once c2 idles in turn, c3 takes them over, a third delivery each.
    await let_idle(IDLE_S)
    page = await event_bus.claim_stale(stream, "g", "c3", min_idle_s=MIN_IDLE_S)
    assert ids_of(page.messages) == ids
    assert {m.deliveries for m in page.messages} == {3}
    assert page.cursor == "0-0"
    assert await event_bus.pending_count(stream, "g") == 5
    assert await event_bus.ack(stream, "g", ids) == 5


async def test_claim_stale_reports_trimmed_entries_as_deleted(
    event_bus: EventBus, stream: str, let_idle: LetIdle
) -> None:
    await event_bus.ensure_group(stream, "g")
    first = await event_bus.publish(stream, {"n": "first"})
    assert ids_of(await event_bus.read_group(stream, "g", "c1", count=1)) == [first]
    # Enough entries that even Redis' approximate trimming drops the first one.
    await publish_n(event_bus, stream, 250, maxlen=10)
    assert ids_of(await event_bus.read(stream, count=1)) != [first]

    await let_idle(IDLE_S)
    page = await event_bus.claim_stale(stream, "g", "c2", min_idle_s=MIN_IDLE_S)
    assert page.deleted_ids == (first,)
    assert page.messages == ()
    assert await event_bus.pending_count(stream, "g") == 0


async def test_cancelled_blocked_read_group_loses_no_entry(
    event_bus: EventBus, stream: str
) -> None:
    await event_bus.ensure_group(stream, "g")
    for _ in range(5):
        with anyio.move_on_after(0.05) as scope:
            await event_bus.read_group(stream, "g", "c1", block_s=5)
        assert scope.cancelled_caught
        entry_id = await event_bus.publish(stream, {"k": "v"})
        assert ids_of(await event_bus.read_group(stream, "g", "c1")) == [entry_id]
        assert await event_bus.ack(stream, "g", [entry_id]) == 1


async def test_cancelled_blocked_read_leaves_the_bus_usable(
    event_bus: EventBus, stream: str
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: event_bus.read(stream, block_s=5))
        await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    entry_id = await event_bus.publish(stream, {"k": "v"})
    assert ids_of(await event_bus.read(stream, block_s=1)) == [entry_id]
