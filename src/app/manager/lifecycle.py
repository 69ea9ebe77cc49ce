"""What a worker's own lifecycle events (``run_id: null``) on its output stream do to its
registry record, as the watcher's follower reads them (:mod:`.watcher`):

- ``ready`` -> RUNNING (from STARTING only);
- ``heartbeat`` -> ``heartbeat_at`` at the wrapper's own timestamp (``detail.at``), so
  replaying old entries after a manager restart never makes a dead worker look alive; an
  UNHEALTHY worker heard again is RUNNING again;
- ``stopped`` -> STOPPED (FAILED when the wrapper says ``failed``).
"""

from __future__ import annotations

from datetime import datetime

import structlog

from codeyard.app.observability.metrics import ManagerMetrics
from codeyard.domain.events import AgentEvent, LifecyclePayload
from codeyard.domain.worker import WorkerRecord, WorkerStatus
from codeyard.ports.worker_registry import WorkerRegistry

log = structlog.get_logger(__name__)


async def apply_lifecycle(
    record: WorkerRecord,
    event: AgentEvent,
    *,
    registry: WorkerRegistry,
    metrics: ManagerMetrics,
) -> WorkerRecord:
    """Apply ``event`` (read from ``record``'s worker output) to the registry; returns the
    record as written, or ``record`` unchanged when there was nothing to write."""
    payload = event.payload
    worker_id = record.worker_id
    metrics.event(event)
    if event.run_id is not None or not isinstance(payload, LifecyclePayload):
        return record
    at = _timestamp(payload.detail.get("at"))
    if payload.state == "ready":
        current = await registry.get(worker_id)
        if current is not None and current.status is WorkerStatus.STARTING:
            record = await registry.set_status(worker_id, WorkerStatus.RUNNING)
            metrics.spawn_ready(worker_id)
            log.info("worker running", worker_id=worker_id)
    elif payload.state == "heartbeat":
        current = await registry.get(worker_id)
        if current is None or current.status.is_terminal:
            return record
        revive = WorkerStatus.RUNNING if current.status is WorkerStatus.UNHEALTHY else None
        if at is not None and at <= current.heartbeat_at and revive is None:
            return record  # an old heartbeat replayed
        record = await registry.heartbeat(worker_id, at=at, status=revive)
    elif payload.state == "stopped":
        failed = payload.detail.get("reason") == "failed"
        status = WorkerStatus.FAILED if failed else WorkerStatus.STOPPED
        current = await registry.get(worker_id)
        if current is not None and not current.status.is_terminal:
            record = await registry.set_status(
                worker_id, status, error="the worker wrapper failed" if failed else None
            )
    return record


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
