"""WorkerOutput: everything a worker wrapper publishes on ``worker:{id}:output``.

* **Entries.** Each holds one :class:`AgentEvent` as JSON (field ``event``) and its
  payload type (field ``type``). Agent events keep the agent's own per-run ``seq`` and
  ``run_id``; the wrapper's own events (lifecycle, errors about input) carry
  ``run_id=None`` and a ``seq`` of their own (:meth:`WorkerOutput.own_event`).
* **Batching.** Every event goes through one :class:`.BatchingPublisher`: the wrapper
  hands events to its buffer and its task (:meth:`WorkerOutput.run`) sends whatever is
  buffered in one ``publish_many`` (a lone event at once, a burst in few round trips), in
  hand-over order. :meth:`WorkerOutput.flush` waits until all of it is on the stream. A
  publish failure ends the publisher task.
* **Redaction.** The worker's secret values are redacted from every event before it is
  published, whatever the provider, whatever produced the text (the CLI's output, a
  tool's, a git error, a prompt the CLI echoes with its filled-in secret references): one
  regex search of the event's JSON, a scrub of the event only when it matches.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import anyio
import anyio.abc

from codeyard.adapters.cli.redact import Redactor
from codeyard.app.event_publisher import BatchingPublisher
from codeyard.domain.events import AgentEvent, EventPayload, EventSequencer, LifecyclePayload
from codeyard.domain.streams import worker_output_stream
from codeyard.domain.worker_io import EVENT_FIELD, TYPE_FIELD
from codeyard.ports.clock import Clock
from codeyard.ports.event_bus import EventBus


class WorkerOutput:
    """One worker's output stream: redacted, batched, in order (module doc)."""

    def __init__(
        self,
        bus: EventBus,
        worker_id: str,
        *,
        provider: str,
        clock: Clock,
        secret_values: Iterable[str] = (),
    ) -> None:
        self._clock = clock
        self._redactor = Redactor(secret_values)
        self._events = BatchingPublisher(bus, worker_output_stream(worker_id))
        self._own = EventSequencer(provider=provider, worker_id=worker_id)
        #: Held while stamping and handing over the wrapper's own events; holding it
        #: elsewhere keeps the heartbeat from handing one over meanwhile.
        self.own_lock = anyio.Lock()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The publisher task (until cancelled or a publish fails)."""
        await self._events.run(task_status=task_status)

    async def flush(self) -> None:
        """Return once every event handed over so far is on the stream."""
        await self._events.flush()

    async def publish(self, event: AgentEvent) -> None:
        data = event.model_dump_json()
        if self._redactor.contains_secret(data):
            # Scrubbed as data, not as text: a secret may also match JSON structure.
            scrubbed = self._redactor.scrub(event.model_dump(mode="json"))
            data = json.dumps(scrubbed, ensure_ascii=False, separators=(",", ":"))
        fields = {EVENT_FIELD: data, TYPE_FIELD: event.payload.type}
        await self._events.send(fields)

    async def own_event(self, payload: EventPayload) -> None:
        """Publish one of the wrapper's own events (``run_id=None``, its own ``seq``)."""
        # The heartbeat task publishes too: stamping and handing over under one lock keeps
        # the wrapper's own seq in stream order (the publisher keeps hand-over order).
        async with self.own_lock:
            await self.publish(self._own.stamp(payload))

    async def lifecycle(self, state: str, **detail: str | int | bool) -> None:
        payload = LifecyclePayload(
            state=state, detail={"at": self._clock.now().isoformat(), **detail}
        )
        await self.own_event(payload)
