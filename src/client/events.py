"""Worker output as the client sees it: stream entries turned into :class:`WorkerEvent`.

An output entry (see :mod:`codeyard.domain.worker_io`) that cannot be parsed is skipped
with a warning by the caller: one garbage entry must never end an event iterator.
"""

from __future__ import annotations

from dataclasses import dataclass

from codeyard.domain.agent import AgentResult
from codeyard.domain.errors import CodeyardError, InvalidRequest
from codeyard.domain.events import AgentEvent, ResultPayload
from codeyard.domain.streams import StreamMessage
from codeyard.domain.worker_io import EVENT_FIELD

#: Prefix of the ``terminal_reason`` of the failed result the manager publishes (with
#: ``run_id=None``) when a worker's container dies.
CONTAINER_DIED_PREFIX = "container_"


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
