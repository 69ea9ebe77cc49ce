"""Readers of a worker's output drop an event appended twice (src/client/events.py).

The worker's publishes are idempotent; this is the readers' defence in depth against any
other duplicate: ``CodeyardClient.events`` (hence ``wait_result``/``wait_run`` and the
task runner) yields each event id once, remembering a bounded number of ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anyio
import pytest
from structlog.testing import capture_logs

from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.app.event_publisher import BatchingPublisher
from codeyard.client import CodeyardClient, WorkerEvent
from codeyard.client.events import SeenEvents
from codeyard.domain.events import EventSequencer, MessagePayload
from codeyard.domain.streams import worker_output_stream
from codeyard.domain.worker_io import EVENT_FIELD, TYPE_FIELD
from tests.unit.client_support import result_event

pytestmark = pytest.mark.anyio

OUT = worker_output_stream("w-1")


def message(sequencer: EventSequencer, text: str) -> dict[str, str]:
    event = sequencer.stamp(MessagePayload(text=text))
    return {EVENT_FIELD: event.model_dump_json(), TYPE_FIELD: "message"}


async def first_events(client: CodeyardClient, n: int, after: str = "0-0") -> list[WorkerEvent]:
    found: list[WorkerEvent] = []
    with anyio.fail_after(5):
        async for event in client.events("w-1", after=after, block_s=0.01):
            found.append(event)
            if len(found) == n:
                break
    return found


def test_seen_events_remember_a_bounded_number_of_ids() -> None:
    seen = SeenEvents(limit=3)
    assert [seen.first_time(i) for i in ("a", "b", "a", "c", "b")] == [
        True,
        True,
        False,
        True,
        False,
    ]
    assert seen.first_time("d")  # "a" is forgotten: the oldest of four
    assert seen.first_time("a")
    assert not seen.first_time("c")
    assert not seen.first_time("d")
    with pytest.raises(ValueError, match="at least 1"):
        SeenEvents(limit=0)


async def test_events_yield_a_repeated_event_once() -> None:
    bus, sequencer = InMemoryEventBus(), EventSequencer(run_id="r-1")
    hello, done = message(sequencer, "hello"), result_event("w-1", "r-1", "done")
    first = await bus.publish(OUT, hello)
    again = await bus.publish(OUT, hello)  # the same event (same id) twice in a row
    result_id = await bus.publish(OUT, done)
    await bus.publish(OUT, hello)  # and again much later, after the result
    await bus.publish(OUT, done)
    late = await bus.publish(OUT, message(sequencer, "next"))
    client = CodeyardClient(bus)
    with capture_logs() as logs:
        events = await first_events(client, 3)
    assert [e.entry_id for e in events] == [first, result_id, late]
    assert not logs  # repeats are dropped silently: not malformed
    # A resumed reader knows the events it read itself: the repeat right after its
    # cursor is new to it, the later repeats are not.
    resumed = await first_events(client, 3, after=first)
    assert [e.entry_id for e in resumed] == [again, result_id, late]


async def test_wait_run_and_wait_result_see_one_result_per_run() -> None:
    bus, sequencer = InMemoryEventBus(), EventSequencer(run_id="r-1")
    hello = message(sequencer, "hello")
    for fields in (hello, hello, result_event("w-1", "r-1", "one")):
        await bus.publish(OUT, fields)
    client = CodeyardClient(bus)
    report = await client.wait_run("w-1", "r-1", timeout_s=5)
    assert [e.seq for e in report.events] == [0, 0]  # the message once, then the result
    assert report.result.text == "one"
    # A repeated result of run r-1 is not taken for r-2's, nor seen twice by a follower.
    repeated = result_event("w-1", "r-1", "one again")
    await bus.publish(OUT, repeated)
    await bus.publish(OUT, repeated)
    await bus.publish(OUT, result_event("w-1", "r-2", "two"))
    results = [e.result for e in await first_events(client, 2, after=report.entry_id)]
    assert [r.text if r else None for r in results] == ["one again", "two"]
    got = await client.wait_result("w-1", request_id="r-2", after=report.entry_id, timeout_s=5)
    assert got.text == "two"


class RecordingBus(InMemoryEventBus):
    def __init__(self) -> None:
        super().__init__()
        self.idempotent: list[bool] = []

    async def publish_many(
        self,
        stream: str,
        entries: Sequence[Mapping[str, str]],
        *,
        maxlen: int | None = None,
        idempotent: bool = False,
    ) -> list[str]:
        self.idempotent.append(idempotent)
        return await super().publish_many(stream, entries, maxlen=maxlen, idempotent=idempotent)


async def test_the_worker_publisher_publishes_idempotently() -> None:
    bus = RecordingBus()
    await BatchingPublisher(bus, "a").send({"e": "1"})
    await BatchingPublisher(bus, "a").send({"e": "1"})  # a repeat: not appended
    await bus.publish("b", {"e": "1"})
    await bus.publish("b", {"e": "1"})  # a plain publish appends it again
    assert bus.idempotent == [True, True, False, False]
    assert (await bus.length("a"), await bus.length("b")) == (1, 2)
