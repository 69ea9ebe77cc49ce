"""Which runs of a worker still wait for a result, read from its own streams.

A worker that dies must leave no run without a result: a client waits on its run id (the
create's ``prompt_request_id``, a ``send``'s request id) and nothing else would ever
answer it. Those runs are, at the death:

- the runs with events on ``worker:{id}:output`` but no result (the run in flight);
- the prompts still on ``worker:{id}:input``: the wrapper deletes an entry only once its
  run's terminal event is on the output (``worker_input``), so every prompt not finished
  is there, including one the worker took but died on before its first event (found by
  bench/soak_faults.py: such a death got a result with ``run_id: null`` only);

less the runs that already have a result (a worker dead between its result and that
delete). Both streams are in Redis, durable, and shared by every manager: a manager
restarted after a ``kill -9`` learns the runs of the workers it adopts from them, with
nothing to carry over. The watcher feeds a :class:`RunBook` as it follows the output, so a
death reads only the entries it has not seen yet.

A death is reported once: the manager's results for it (one per open run, then the
worker's own, ``run_id: null``, which ends ``codeyard follow`` and "any run" waiters) go
out in one atomic ``publish_many``, so finding the worker's one on the stream means all
were published (:attr:`RunBook.died`), and a finish that runs again (a sweep after a
store outage cut the last one short, the reconciler after a restart) publishes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from codeyard.domain.errors import CodeyardError
from codeyard.domain.events import CONTAINER_DIED_PREFIX, AgentEvent, ResultPayload
from codeyard.domain.streams import worker_input_stream, worker_output_stream
from codeyard.domain.worker_io import EVENT_FIELD, WorkerInput, parse_worker_message
from codeyard.ports.event_bus import EventBus

_PAGE = 500


@dataclass
class RunBook:
    """What a worker's output stream says about its runs, fed in stream order."""

    #: The last entry fed.
    cursor: str = "0-0"
    #: Runs with events and no result yet, in the order they began.
    open: dict[str, None] = field(default_factory=dict)
    #: Runs that have their result.
    ended: set[str] = field(default_factory=set)
    #: The worker's death is reported (its ``run_id: null`` death result is there).
    died: bool = False

    def feed(self, entry_id: str, event: AgentEvent) -> None:
        self.cursor = entry_id
        run = event.run_id
        if isinstance(event.payload, ResultPayload):
            if run is not None:
                self.open.pop(run, None)
                self.ended.add(run)
            elif (event.payload.result.terminal_reason or "").startswith(CONTAINER_DIED_PREFIX):
                self.died = True
        elif run is not None and run not in self.ended:  # git events follow a result
            self.open[run] = None

    def copy(self) -> RunBook:
        return replace(self, open=dict(self.open), ended=set(self.ended))


async def catch_up(bus: EventBus, worker_id: str, book: RunBook) -> RunBook:
    """``book`` fed with the output entries after its cursor, to the stream's end."""
    stream = worker_output_stream(worker_id)
    while entries := await bus.read(stream, after=book.cursor, count=_PAGE):
        for entry in entries:
            try:
                event = AgentEvent.parse(entry.fields.get(EVENT_FIELD, ""))
            except CodeyardError:
                book.cursor = entry.id
                continue  # not an event: nothing to learn
            book.feed(entry.id, event)
    return book


async def queued_runs(bus: EventBus, worker_id: str) -> list[str]:
    """The run ids of the prompts on the worker's input stream, oldest first (prompts
    without a request id cannot be waited on by id: left out)."""
    stream = worker_input_stream(worker_id)
    runs: list[str] = []
    after = "0-0"
    while entries := await bus.read(stream, after=after, count=_PAGE):
        for entry in entries:
            try:
                message = parse_worker_message(entry.fields)
            except CodeyardError:
                continue  # the wrapper answers it with an error event, no run
            if isinstance(message, WorkerInput) and message.request_id is not None:
                runs.append(message.request_id)
        after = entries[-1].id
    return runs


async def unfinished_runs(bus: EventBus, worker_id: str, book: RunBook) -> list[str]:
    """The runs of a dead worker without a result (module doc), in flight first, then the
    queued ones; ``book`` is caught up first. (The worker is dead: neither stream moves.)"""
    await catch_up(bus, worker_id, book)
    runs = dict(book.open)
    runs.update((run, None) for run in await queued_runs(bus, worker_id) if run not in book.ended)
    return list(runs)
