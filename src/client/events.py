"""Worker output as the client sees it: stream entries turned into :class:`WorkerEvent`.

An output entry (see :mod:`codeyard.domain.worker_io`) that cannot be parsed is skipped
with a warning by the caller: one garbage entry must never end an event iterator.

Repeated events are dropped (:class:`SeenEvents`): an event whose id the reader already
yielded is the same event appended twice. The worker's publishes are idempotent (the
EventBus' ``idempotent`` batches), so this is defence in depth against any other source
(a batch repeated after an entry of another publisher, a final event published again),
and every follower of a worker's output (``events``, hence ``wait_result``, ``wait_run``
and the task runner, the CLI and the API) sees each event once. Memory is bounded: a
reader remembers the ids of the last :data:`SEEN_EVENTS` events it yielded, so a repeat
further back, or of an event before where it started reading, is yielded again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import structlog

from codeyard.domain.agent import AgentResult
from codeyard.domain.errors import CodeyardError, InvalidRequest
from codeyard.domain.events import CONTAINER_DIED_PREFIX, AgentEvent, ResultPayload
from codeyard.domain.streams import StreamMessage
from codeyard.domain.worker_io import EVENT_FIELD
from codeyard.ports.event_bus import EventBus

log = structlog.get_logger(__name__)

#: Event ids a reader remembers to drop repeats (~100 B each: ~1 MB per follower at most).
SEEN_EVENTS = 10_000


class SeenEvents:
    """The ids of the last ``limit`` events a reader yielded (module doc)."""

    def __init__(self, limit: int = SEEN_EVENTS) -> None:
        if limit < 1:
            msg = "limit must be at least 1"
            raise ValueError(msg)
        self._limit = limit
        self._order: deque[str] = deque()
        self._ids: set[str] = set()

    def first_time(self, event_id: str) -> bool:
        """Whether ``event_id`` is new (then it is remembered, forgetting the oldest)."""
        if event_id in self._ids:
            return False
        if len(self._order) == self._limit:
            self._ids.discard(self._order.popleft())
        self._order.append(event_id)
        self._ids.add(event_id)
        return True


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """One event of a worker's output stream and where it is: pass ``entry_id`` as
    ``after`` to resume reading right after it."""

    entry_id: str
    event: AgentEvent

    @property
    def result(self) -> AgentResult | None:
        """The run's result when this is the terminal event of a run."""
        payload = self.event.payload
        return payload.result if isinstance(payload, ResultPayload) else None


def parse_output_entry(entry: StreamMessage) -> WorkerEvent:
    """The event of one output entry; raises :class:`InvalidRequest` (and nothing else)."""
    raw = entry.fields.get(EVENT_FIELD)
    if raw is None:
        raise InvalidRequest(
            f"output entry has no {EVENT_FIELD!r} field",
            entry_id=entry.id,
            keys=sorted(entry.fields),
        )
    try:
        return WorkerEvent(entry_id=entry.id, event=AgentEvent.parse(raw))
    except CodeyardError as exc:
        raise InvalidRequest(exc.message, entry_id=entry.id, **exc.fields) from exc
    except (ValueError, RecursionError) as exc:  # defensive: pathological JSON
        raise InvalidRequest("output entry is not an event", entry_id=entry.id) from exc


def matches_run(event: WorkerEvent, request_id: str | None) -> AgentResult | None:
    """The result ``event`` carries when it ends the run ``request_id`` (any run if ``None``).

    A result with ``run_id=None`` whose ``terminal_reason`` starts with ``container_`` also
    ends the run: the manager publishes it when the worker's container died, and then no
    other result will ever come.
    """
    result = event.result
    if result is None or request_id is None:
        return result
    run_id = event.event.run_id
    if run_id == request_id:
        return result
    reason = result.terminal_reason or ""
    if run_id is None and reason.startswith(CONTAINER_DIED_PREFIX):
        return result
    return None


async def follow_output(
    bus: EventBus, stream: str, after: str, block_s: float
) -> AsyncGenerator[WorkerEvent, None]:
    """The events of the output ``stream`` after entry ``after``, endlessly: malformed
    entries skipped with a warning, repeated events silently (module doc)."""
    cursor, seen = after, SeenEvents()
    while True:
        for entry in await bus.read(stream, after=cursor, block_s=block_s):
            cursor = entry.id
            try:
                event = parse_output_entry(entry)
            except CodeyardError as exc:
                log.warning(
                    "skipping a malformed output entry",
                    stream=stream,
                    entry_id=entry.id,
                    error=str(exc),
                )
                continue
            if seen.first_time(event.event.id):
                yield event
