"""An in-process :class:`~codeyard.ports.worker_registry.WorkerRegistry`.

Time (the default ``heartbeat`` timestamp, ``started_at`` and ``ended_at``) comes from an
injected :class:`~codeyard.ports.clock.Clock`. Every call does its read-check-write without awaiting
in between, so it is atomic on one event loop, and starts with a checkpoint, so a cancelled
call never happened. Records are frozen models: the stored object is returned as is.
"""

from __future__ import annotations

import itertools
from datetime import datetime

import anyio.lowlevel

from codeyard.adapters.memory.clock import SystemClock
from codeyard.domain.errors import (
    AlreadyExists,
    InvalidRequest,
    InvalidTransition,
    WorkerNotFound,
)
from codeyard.domain.worker import WorkerRecord, WorkerStatus, check_transition
from codeyard.ports.clock import Clock


class InMemoryWorkerRegistry:
    """Worker records in a dict keyed by ``worker_id``."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._workers: dict[str, WorkerRecord] = {}
        # Registration order breaks ties between equal ``created_at`` in ``list_active``.
        self._seq: dict[str, int] = {}
        self._counter = itertools.count()

    async def register(self, record: WorkerRecord) -> WorkerRecord:
        await anyio.lowlevel.checkpoint()
        if record.worker_id in self._workers:
            raise AlreadyExists("worker already registered", worker_id=record.worker_id)
        self._workers[record.worker_id] = record
        self._seq[record.worker_id] = next(self._counter)
        return record

    async def get(self, worker_id: str) -> WorkerRecord | None:
        await anyio.lowlevel.checkpoint()
        return self._workers.get(worker_id)

    async def set_status(
        self,
        worker_id: str,
        status: WorkerStatus,
        *,
        error: str | None = None,
        container_id: str | None = None,
        ip: str | None = None,
        task_id: str | None = None,
    ) -> WorkerRecord:
        await anyio.lowlevel.checkpoint()
        record = self._get(worker_id).with_status(status, error=error).stamped(self._clock.now())
        update = {
            k: v
            for k, v in (("container_id", container_id), ("ip", ip), ("task_id", task_id))
            if v is not None
        }
        if update:
            # Validate: task_id must be a Name, like everything that reaches the record.
            record = WorkerRecord.parse({**record.model_dump(), **update})
        self._workers[worker_id] = record
        return record

    async def heartbeat(
        self, worker_id: str, *, at: datetime | None = None, status: WorkerStatus | None = None
    ) -> WorkerRecord:
        await anyio.lowlevel.checkpoint()
        record = self._get(worker_id)
        if record.status.is_terminal:
            raise InvalidTransition(
                "a terminal worker cannot heartbeat",
                worker_id=worker_id,
                current=record.status.value,
                requested=(status or record.status).value,
            )
        new_status = status or record.status
        if new_status is not record.status:  # no status change is not a transition
            check_transition(worker_id, record.status, new_status)
        now = self._clock.now()
        record = WorkerRecord.parse(
            {**record.model_dump(), "heartbeat_at": at or now, "status": new_status}
        ).stamped(now)
        self._workers[worker_id] = record
        return record

    async def deregister(self, worker_id: str) -> None:
        await anyio.lowlevel.checkpoint()
        self._workers.pop(worker_id, None)
        self._seq.pop(worker_id, None)

    async def list_active(self) -> list[WorkerRecord]:
        await anyio.lowlevel.checkpoint()
        return self._active()

    async def stale(self, older_than: datetime) -> list[WorkerRecord]:
        await anyio.lowlevel.checkpoint()
        if older_than.tzinfo is None or older_than.utcoffset() is None:
            raise InvalidRequest("datetime must be timezone-aware", value=older_than.isoformat())
        return [r for r in self._active() if r.heartbeat_at < older_than]

    def _active(self) -> list[WorkerRecord]:
        active = [r for r in self._workers.values() if r.status.is_active]
        return sorted(active, key=lambda r: (r.created_at, self._seq[r.worker_id]))

    def _get(self, worker_id: str) -> WorkerRecord:
        record = self._workers.get(worker_id)
        if record is None:
            raise WorkerNotFound("no such worker", worker_id=worker_id)
        return record
