"""What the manager does about a worker that died or went silent: failed results on its
output stream (one per run left without one, ``runs``), FAILED in the registry, and the
queue job it held given back (retry or dead letter). Used by the watcher's sweeps and
heartbeat checks; :func:`silent` is what those checks call silent."""

from __future__ import annotations

import contextlib
from datetime import datetime

import structlog

from codeyard.domain.agent import AgentResult
from codeyard.domain.container import ContainerInfo
from codeyard.domain.errors import CodeyardError
from codeyard.domain.events import EventSequencer, ResultPayload
from codeyard.domain.streams import worker_output_stream
from codeyard.domain.task import JobStatus
from codeyard.domain.worker import WorkerRecord, WorkerStatus
from codeyard.domain.worker_io import EVENT_FIELD, TYPE_FIELD
from codeyard.ports.event_bus import EventBus
from codeyard.ports.work_queue import WorkQueue
from codeyard.ports.worker_registry import WorkerRegistry

from .launch import death_result
from .runs import RunBook, unfinished_runs

log = structlog.get_logger(__name__)


async def report_death(
    record: WorkerRecord,
    info: ContainerInfo | None,
    book: RunBook,
    *,
    bus: EventBus,
    registry: WorkerRegistry,
    queue: WorkQueue,
    output_maxlen: int | None,
) -> None:
    """A worker's container ended (``record``: its current record, not STOPPED): a failed
    result for each of its runs still without one, then (unless it exited 0) the worker's
    own death result with ``run_id: null``, all at once and only if its death was not
    reported yet (``runs`` module doc); then the worker STOPPED (exit 0) or FAILED and its
    job back to the queue. ``book``: what the watcher read of its output so far."""
    clean = info is not None and info.exit_code == 0
    runs = await unfinished_runs(bus, record.worker_id, book)
    result = death_result(record.spec.agent, info)
    if not book.died and (runs or not clean):
        events = [_stamped(record, run, result) for run in runs]
        if not clean:
            events.append(_stamped(record, None, result))
        await bus.publish_many(
            worker_output_stream(record.worker_id), events, maxlen=output_maxlen, idempotent=True
        )
        log.info("worker death reported", worker_id=record.worker_id, runs=runs)
    if record.status.is_terminal:
        return  # FAILED already: the wrapper said so, or an earlier finish got this far
    if clean:
        await registry.set_status(record.worker_id, WorkerStatus.STOPPED)
        return
    await registry.set_status(record.worker_id, WorkerStatus.FAILED, error=result.terminal_reason)
    await requeue(queue, record, result.terminal_reason or "container died")


def _stamped(record: WorkerRecord, run_id: str | None, result: AgentResult) -> dict[str, str]:
    sequencer = EventSequencer(
        provider=record.spec.agent, worker_id=record.worker_id, run_id=run_id
    )
    event = sequencer.stamp(ResultPayload(result=result))
    return {EVENT_FIELD: event.model_dump_json(), TYPE_FIELD: event.payload.type}


async def requeue(queue: WorkQueue, record: WorkerRecord, error: str) -> None:
    """Give the queue job the worker held back to the queue (retry or dead letter)."""
    if record.task_id is None:
        return
    job = await queue.get(record.task_id)
    if job is None or job.status is not JobStatus.RUNNING or job.lease_owner is None:
        return
    with contextlib.suppress(CodeyardError):  # the lease moved on meanwhile: fine
        await queue.fail(job.id, job.lease_owner, error=error)


def silent(
    record: WorkerRecord, *, owner: str, before: datetime, seeing_since: datetime | None
) -> bool:
    """A live worker of ``owner`` that started and has said nothing since ``before`` (not
    yet UNHEALTHY), as far as the manager could hear: ``seeing_since`` is since when it has
    been reading the worker's output stream without a failure (``None``: not reading it
    now, or not watching it), and a worker is taken to have been heard then, so silence
    is ``max(heartbeat_at, seeing_since) < before``: a Redis outage or a manager restart
    is no evidence against a worker (:mod:`.watcher`). A STARTING record without a
    container has not started: a create not done yet, or cut short (the reconciler's,
    after ``takeover_s + orphan_grace_s``), and its ``heartbeat_at`` is only its
    registration time (a create refreshes it when it records the container)."""
    not_started = record.status is WorkerStatus.STARTING and record.container_id is None
    return (
        record.host == owner
        and record.status.is_active
        and record.status is not WorkerStatus.UNHEALTHY
        and not not_started
        and record.heartbeat_at < before
        and seeing_since is not None
        and seeing_since < before
    )
