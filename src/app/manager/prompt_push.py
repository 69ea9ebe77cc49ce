"""Whether a create's headless prompt already went to its worker (once per request id).

A re-delivered create must not push its prompt twice. The pushed entry does not stay on
``worker:{id}:input``: the worker deletes each entry once it has handled it, so prompts do
not pile up in Redis. So the prompt counts as pushed when its entry is still on the input
stream OR the worker's output holds an event of that run (``run_id`` is the request id).
The input is read first: the worker publishes a run's events before it deletes the entry,
so an entry missing from the input was handled, and its events are on the output by then.
(A worker whose output is trimmed by ``output_maxlen`` may have lost an old run's events:
only a create re-delivered after that could push its prompt again.)
"""

from __future__ import annotations

import json

from codeyard.domain.streams import worker_input_stream, worker_output_stream
from codeyard.domain.worker_io import EVENT_FIELD, INPUT_FIELD
from codeyard.ports.event_bus import EventBus

_PAGE = 500


async def prompt_pushed(bus: EventBus, worker_id: str, request_id: str) -> bool:
    """True when the prompt of ``request_id`` is on the worker's input or was run (doc)."""
    # The serialized id as it appears in an entry's JSON (compact or with spaces).
    quoted = json.dumps(request_id)
    needles = (f'"request_id":{quoted}', f'"request_id": {quoted}')
    if await _any_entry(bus, worker_input_stream(worker_id), INPUT_FIELD, needles):
        return True
    run = (f'"run_id":{quoted}', f'"run_id": {quoted}')
    return await _any_entry(bus, worker_output_stream(worker_id), EVENT_FIELD, run)


async def _any_entry(bus: EventBus, stream: str, field: str, needles: tuple[str, ...]) -> bool:
    after = "0-0"
    while entries := await bus.read(stream, after=after, count=_PAGE):
        for entry in entries:
            text = entry.fields.get(field, "")
            if any(needle in text for needle in needles):
                return True
        after = entries[-1].id
    return False
