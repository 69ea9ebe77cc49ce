"""BatchingPublisher on the in-memory event bus: order, batching, flush, errors, cancellation.

The bus' ``publish_many`` is real (InMemoryEventBus); a subclass records each batch and can
hold one "on the wire" (after the append, as when a reply is slow) or fail it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import anyio
import anyio.abc
import pytest

from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.app.event_publisher import BatchingPublisher
from codeyard.domain.errors import ServiceUnavailable

pytestmark = pytest.mark.anyio

STREAM = "out"


class WireBus(InMemoryEventBus):
    """Records batch sizes; ``hold`` keeps the next batch waiting after its append until
    ``release``; ``fail`` makes the next batches fail before appending."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.holding = anyio.Event()
        self._gate: anyio.Event | None = None
        self._release: Callable[[], None] = lambda: None
        self.fail = False
        self.idempotent = False  # of the last batch

    def hold(self) -> None:
        self._gate, self.holding = anyio.Event(), anyio.Event()
        self._release = self._gate.set

    def release(self) -> None:
        self._release()

    async def publish_many(
        self,
        stream: str,
        entries: Sequence[Mapping[str, str]],
        *,
        maxlen: int | None = None,
        idempotent: bool = False,
    ) -> list[str]:
        if self.fail:
            raise ServiceUnavailable("bus down", service="redis")
        self.idempotent = idempotent
        ids = await super().publish_many(stream, entries, maxlen=maxlen, idempotent=idempotent)
        if entries:
            self.batches.append(len(entries))
        gate, self._gate = self._gate, None  # holds one batch only
        if gate is not None:
            self.holding.set()
            await gate.wait()
        return ids


async def stored(bus: InMemoryEventBus) -> list[str]:
    return [m.fields["n"] for m in await bus.read(STREAM, count=10_000)]


def entry(n: int) -> dict[str, str]:
    return {"n": str(n)}


async def test_a_lone_entry_goes_out_at_once_and_a_burst_in_few_batches() -> None:
    bus = WireBus()
    publisher = BatchingPublisher(bus, STREAM, max_batch=50)
    async with anyio.create_task_group() as tg:
        await tg.start(publisher.run)
        bus.hold()
        await publisher.send(entry(0))
        with anyio.fail_after(5):
            await bus.holding.wait()  # sent without a flush, and alone
        assert await stored(bus) == ["0"]
        for n in range(1, 121):  # buffered while batch 0 is on the wire
            await publisher.send(entry(n))
        bus.release()
        await publisher.flush()
        tg.cancel_scope.cancel()
    assert await stored(bus) == [str(n) for n in range(121)]
    assert bus.batches == [1, 50, 50, 20]


async def test_flush_waits_for_the_entries_on_the_wire() -> None:
    bus = WireBus()
    publisher = BatchingPublisher(bus, STREAM)
    flushed = anyio.Event()

    async def flush() -> None:
        await publisher.flush()
        flushed.set()

    async with anyio.create_task_group() as tg:
        await tg.start(publisher.run)
        await publisher.flush()  # nothing sent: returns at once
        bus.hold()
        await publisher.send(entry(1))
        tg.start_soon(flush)
        await bus.holding.wait()
        await anyio.sleep(0.05)
        assert not flushed.is_set()
        bus.release()
        with anyio.fail_after(5):
            await flushed.wait()
        tg.cancel_scope.cancel()
    assert await stored(bus) == ["1"]


async def test_order_holds_across_senders_and_batches() -> None:
    bus = WireBus()
    publisher = BatchingPublisher(bus, STREAM, max_batch=7, buffer=5)
    lock = anyio.Lock()
    counter = iter(range(1000))

    async def sender() -> None:
        for _ in range(100):
            async with lock:  # number and hand over together, as the wrapper stamps
                await publisher.send(entry(next(counter)))

    async with anyio.create_task_group() as tg:
        await tg.start(publisher.run)
        async with anyio.create_task_group() as senders:
            for _ in range(3):
                senders.start_soon(sender)
        await publisher.flush()
        tg.cancel_scope.cancel()
    assert await stored(bus) == [str(n) for n in range(300)]
    assert max(bus.batches) <= 7  # the buffer of 5 made senders wait, nothing was lost


async def test_a_publish_failure_ends_the_task_and_reaches_flush() -> None:
    bus = WireBus()
    publisher = BatchingPublisher(bus, STREAM)
    task_errors: list[BaseException] = []

    async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            await publisher.run(task_status=task_status)
        except ServiceUnavailable as exc:
            task_errors.append(exc)

    async with anyio.create_task_group() as tg:
        await tg.start(run)
        bus.hold()
        await publisher.send(entry(0))
        await bus.holding.wait()
        await publisher.send(entry(1))
        await publisher.send(entry(2))
        bus.fail = True  # for the next batch: [1, 2]
        bus.release()
        with anyio.fail_after(5), pytest.raises(ServiceUnavailable) as info:
            await publisher.flush()  # waited for 1 and 2: dropped with the failed batch
    assert task_errors == [info.value]  # run() ended with the same error
    assert await stored(bus) == ["0"]
    with pytest.raises(ServiceUnavailable):
        await publisher.flush()  # still about entries 1 and 2
    # Afterwards (the wrapper's final events), entries are published directly, best effort.
    bus.fail = False
    await publisher.send(entry(3))
    await publisher.flush()
    assert await stored(bus) == ["0", "3"]


async def test_after_cancellation_leftovers_go_out_before_new_entries() -> None:
    bus = WireBus()
    publisher = BatchingPublisher(bus, STREAM)
    async with anyio.create_task_group() as tg:
        await tg.start(publisher.run)
        bus.hold()
        await publisher.send(entry(0))
        await bus.holding.wait()
        for n in range(1, 4):
            await publisher.send(entry(n))
        tg.cancel_scope.cancel()  # batch [0] on the wire, 1-3 buffered
    assert await stored(bus) == ["0"]
    await publisher.send(entry(4))  # direct: the leftovers first, then this, in one batch
    assert await stored(bus) == ["0", "1", "2", "3", "4"]  # 0 was not sent again
    assert bus.batches == [1, 4]
    await publisher.flush()
    assert await stored(bus) == ["0", "1", "2", "3", "4"]


async def test_flush_after_cancellation_publishes_the_leftovers() -> None:
    bus = WireBus()
    publisher = BatchingPublisher(bus, STREAM, max_batch=2)
    async with anyio.create_task_group() as tg:
        await tg.start(publisher.run)
        bus.hold()
        await publisher.send(entry(0))
        await bus.holding.wait()
        for n in range(1, 6):
            await publisher.send(entry(n))
        tg.cancel_scope.cancel()
    await publisher.flush()
    assert await stored(bus) == [str(n) for n in range(6)]
    assert bus.batches == [1, 2, 2, 1]  # direct publication keeps max_batch too


async def test_without_the_task_send_publishes_directly() -> None:
    bus = WireBus()
    publisher = BatchingPublisher(bus, STREAM)
    await publisher.send(entry(0))
    assert await stored(bus) == ["0"]
    await publisher.flush()
    async with anyio.create_task_group() as tg:
        await tg.start(publisher.run)
        with pytest.raises(RuntimeError):
            await publisher.run()
        tg.cancel_scope.cancel()


def test_batch_and_buffer_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BatchingPublisher(InMemoryEventBus(), STREAM, max_batch=0)
    with pytest.raises(ValueError, match="at least 1"):
        BatchingPublisher(InMemoryEventBus(), STREAM, buffer=0)


async def test_a_sender_waiting_on_a_full_buffer_publishes_directly_once_the_task_ends() -> None:
    bus = WireBus()
    publisher = BatchingPublisher(bus, STREAM, buffer=1)
    async with anyio.create_task_group() as outer, anyio.create_task_group() as tg:
        await tg.start(publisher.run)
        bus.hold()
        await publisher.send(entry(0))
        await bus.holding.wait()
        await publisher.send(entry(1))  # fills the buffer
        outer.start_soon(publisher.send, entry(2))  # waits for room
        await anyio.sleep(0.05)
        assert await stored(bus) == ["0"]
        tg.cancel_scope.cancel()
    # The waiting sender went direct, after the leftover: nothing lost, order kept.
    assert await stored(bus) == ["0", "1", "2"]
