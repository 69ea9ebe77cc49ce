"""OutageGuard / OutageBus with fakes: a fake clock whose sleeps advance it, and an
in-memory bus that fails on demand (the real Redis restart is in
tests/faults/test_worker_redis_outage.py)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import anyio
import pytest

from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.app.worker_outage import Backoff, OutageBus, OutageGuard, RedisOutageTooLong
from codeyard.domain.errors import NotFound, ServiceUnavailable
from codeyard.domain.streams import StreamMessage

pytestmark = pytest.mark.anyio


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await anyio.lowlevel.checkpoint()


class FlakyBus(InMemoryEventBus):
    """``down`` makes every call below fail before doing anything; ``lose_read_reply``
    makes the next ``read_group`` deliver, then fail as if its reply were lost."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.lose_read_reply = False
        self.publish_calls = 0

    def _check(self) -> None:
        if self.down:
            raise ServiceUnavailable("redis unreachable", service="redis")

    async def publish_many(
        self,
        stream: str,
        entries: Sequence[Mapping[str, str]],
        *,
        maxlen: int | None = None,
        idempotent: bool = False,
    ) -> list[str]:
        self.publish_calls += 1
        self._check()
        return await super().publish_many(stream, entries, maxlen=maxlen, idempotent=idempotent)

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int = 10,
        block_s: float | None = None,
    ) -> list[StreamMessage]:
        self._check()
        found = await super().read_group(stream, group, consumer, count=count, block_s=block_s)
        if self.lose_read_reply and found:
            self.lose_read_reply = False
            raise ServiceUnavailable("reply lost", service="redis")
        return found

    async def length(self, stream: str) -> int:
        self._check()
        return await super().length(stream)


def guard(clock: FakeTime, outage_s: float = 10.0) -> OutageGuard:
    return OutageGuard(
        outage_s,
        backoff=Backoff(first_s=0.1, max_s=2.0),
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        rng=random.Random(7),
    )


def test_backoff_grows_to_its_cap_with_jitter_in_the_upper_half() -> None:
    backoff, rng = Backoff(first_s=0.1, max_s=2.0), random.Random(1)
    for attempt, nominal in enumerate([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]):
        delays = {backoff.delay(attempt, rng) for _ in range(50)}
        assert all(nominal / 2 <= d <= nominal for d in delays), (attempt, delays)
        assert len(delays) > 1  # jittered
    assert backoff.delay(10_000, rng) <= 2.0  # no overflow far past the cap


async def test_calls_retry_through_an_outage_and_heartbeats_hear_it_end() -> None:
    clock, bus = FakeTime(), FlakyBus()
    g = guard(clock)
    wrapped = OutageBus(bus, g)
    bus.down = True
    recovered = False

    async def listen() -> None:
        nonlocal recovered
        await g.wait_recovered()
        recovered = True

    async def come_back() -> None:
        while len(clock.sleeps) < 4:
            await anyio.lowlevel.checkpoint()
        bus.down = False

    async with anyio.create_task_group() as tg:
        tg.start_soon(listen)
        tg.start_soon(come_back)
        await anyio.lowlevel.checkpoint()
        ids = await wrapped.publish_many("out", [{"e": "1"}, {"e": "2"}], idempotent=True)
    assert len(ids) == 2
    assert [m.fields["e"] for m in await bus.read("out")] == ["1", "2"]  # once, in order
    assert len(clock.sleeps) >= 4
    assert clock.sleeps[:3] == sorted(clock.sleeps[:3])  # growing
    assert recovered
    assert g.down_since is None


async def test_past_the_bound_calls_fail_with_redis_outage_too_long() -> None:
    clock, bus = FakeTime(), FlakyBus()
    wrapped = OutageBus(bus, guard(clock, outage_s=10.0))
    bus.down = True
    with pytest.raises(RedisOutageTooLong) as caught:
        await wrapped.length("s")
    assert isinstance(caught.value.__cause__, ServiceUnavailable)
    assert caught.value.fields["op"] == "length"
    assert sum(clock.sleeps) == pytest.approx(10.0)  # the last delay stops at the bound
    assert max(clock.sleeps) <= 2.0
    # Still down: the next call fails at once; back: it succeeds and the outage ends.
    before = len(clock.sleeps)
    with pytest.raises(RedisOutageTooLong):
        await wrapped.length("s")
    assert len(clock.sleeps) == before
    bus.down = False
    assert await wrapped.length("s") == 0


async def test_other_errors_and_plain_publishes_are_not_retried() -> None:
    clock, bus = FakeTime(), FlakyBus()
    wrapped = OutageBus(bus, guard(clock))
    with pytest.raises(NotFound):  # no such group: not an outage
        await wrapped.read_group("s", "nogroup", "c1", block_s=0)
    bus.down = True
    with pytest.raises(ServiceUnavailable) as caught:
        await wrapped.publish_many("out", [{"e": "1"}])  # not idempotent: a repeat may double
    assert not isinstance(caught.value, RedisOutageTooLong)
    assert bus.publish_calls == 1
    assert clock.sleeps == []


async def test_cancellation_during_the_back_off_is_not_swallowed() -> None:
    bus = FlakyBus()
    wrapped = OutageBus(bus, OutageGuard(60.0, backoff=Backoff(first_s=5.0, max_s=5.0)))
    bus.down = True
    with anyio.move_on_after(0.2) as scope:
        await wrapped.length("s")
    assert scope.cancelled_caught


async def test_a_read_whose_reply_was_lost_gets_its_entry_on_the_retry() -> None:
    clock, bus = FakeTime(), FlakyBus()
    wrapped = OutageBus(bus, guard(clock))
    await bus.ensure_group("in", "worker")
    entry = await bus.publish("in", {"input": "p1"})
    bus.lose_read_reply = True
    found = await wrapped.read_group("in", "worker", "c1", count=1, block_s=0)
    assert [m.id for m in found] == [entry]  # claimed from the pending list
    assert len(clock.sleeps) == 1
    assert await wrapped.read_group("in", "worker", "c1", count=1, block_s=0) == []
