"""The manager's "prompt already pushed" check (src/app/manager/prompt_push.py): the input
entry, or once the worker has handled and deleted it, the run's events on the output."""

from __future__ import annotations

import json

import pytest

from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.app.manager.prompt_push import prompt_pushed
from codeyard.domain.events import EventSequencer, LifecyclePayload, MessagePayload
from codeyard.domain.streams import worker_input_stream, worker_output_stream
from codeyard.domain.worker_io import EVENT_FIELD, INPUT_FIELD, TYPE_FIELD, WorkerInput

pytestmark = pytest.mark.anyio


async def test_pushed_while_on_the_input_or_once_its_run_published_events() -> None:
    bus = InMemoryEventBus()
    assert not await prompt_pushed(bus, "w1", "r1")
    message = WorkerInput(prompt="go", request_id="r1")
    entry = await bus.publish(worker_input_stream("w1"), {INPUT_FIELD: message.model_dump_json()})
    assert await prompt_pushed(bus, "w1", "r1")
    assert not await prompt_pushed(bus, "w1", "r2")
    assert not await prompt_pushed(bus, "w2", "r1")
    # The worker runs it, publishes the run's events, then deletes the entry.
    own = EventSequencer(provider="scripted", worker_id="w1")
    run = EventSequencer(provider="scripted", worker_id="w1", run_id="r1")
    for event in (own.stamp(LifecyclePayload(state="ready")), run.stamp(MessagePayload(text="hi"))):
        fields = {EVENT_FIELD: event.model_dump_json(), TYPE_FIELD: event.payload.type}
        await bus.publish(worker_output_stream("w1"), fields)
    await bus.delete_entries(worker_input_stream("w1"), [entry])
    assert await prompt_pushed(bus, "w1", "r1")
    assert not await prompt_pushed(bus, "w1", "r2")
    # A request id that only appears inside some text is not a match.
    text = run.stamp(MessagePayload(text=json.dumps({"run_id": "r3"})))
    await bus.publish(worker_output_stream("w1"), {EVENT_FIELD: text.model_dump_json()})
    assert not await prompt_pushed(bus, "w1", "r3")
