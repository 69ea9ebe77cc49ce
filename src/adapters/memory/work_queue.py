"""An in-process :class:`~codeyard.ports.work_queue.WorkQueue` for tests and single-process runs.

Faithful to the port contract, with time taken from an injected
:class:`~codeyard.ports.clock.Clock` (a ``ManualClock`` lets tests expire leases without
sleeping). Only ``wait``'s timeout is real (event-loop) time.

Every method does its whole read-check-write without awaiting in between, so on a single
event loop each call is atomic; each call starts with a checkpoint, so a cancelled call
never happened. Jobs are frozen models: the stored object is returned as is.

Lease boundaries match the Postgres adapter: a lease is held while ``now < expires_at`` and
a running job is claimable again from ``now >= expires_at`` - or, with no attempts left,
dead-lettered by the next ``claim`` on its queue (inside the same atomic call).
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta

import anyio
import anyio.lowlevel
from pydantic import JsonValue

from codeyard.adapters.memory.clock import SystemClock
from codeyard.domain.base import refuse_json_depth
from codeyard.domain.errors import InvalidRequest, JobNotFound, LeaseLost
from codeyard.domain.task import Job, JobStatus, RetryPolicy
from codeyard.ports.clock import Clock
from codeyard.ports.work_queue import LEASE_EXPIRED_ON_FINAL_ATTEMPT

_DEFAULT_RETRY = RetryPolicy()


class InMemoryWorkQueue:
    """Jobs in a dict; ``wait`` wakes on enqueue and on re-queue after a failed attempt."""

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._jobs: dict[str, Job] = {}
        # Insertion order breaks ties between jobs with equal available_at and created_at.
        self._seq: dict[str, int] = {}
        self._counter = itertools.count()
        self._events: dict[str, anyio.Event] = {}

    # --- port -----------------------------------------------------------------------------

    async def enqueue(
        self,
        queue: str,
        payload: dict[str, JsonValue],
        *,
        job_id: str | None = None,
        max_attempts: int = 3,
        available_at: datetime | None = None,
    ) -> Job:
        await anyio.lowlevel.checkpoint()
        _check_json(payload)
        now = self._clock.now()
        fields: dict[str, object] = {
            "queue": queue,
            "payload": payload,
            "max_attempts": max_attempts,
            "available_at": available_at or now,
            "created_at": now,
            "updated_at": now,
        }
        if job_id is not None:
            fields["id"] = job_id
        job = Job.parse(fields)  # validates even when the id exists, like Postgres does
        if job.id in self._jobs:
            return self._jobs[job.id]
        self._jobs[job.id] = job
        self._seq[job.id] = next(self._counter)
        self._notify(queue)
        return job

    async def claim(self, queue: str, owner: str, *, lease: timedelta) -> Job | None:
        await anyio.lowlevel.checkpoint()
        _check_lease(lease)
        now = self._clock.now()
        self._dead_letter_poison(queue, now)
        candidates = [j for j in self._jobs.values() if j.queue == queue and _claimable(j, now)]
        if not candidates:
            return None
        job = min(candidates, key=lambda j: (j.available_at, j.created_at, self._seq[j.id]))
        return self._store(
            job,
            status=JobStatus.RUNNING,
            attempts=job.attempts + 1,
            lease_owner=owner,
            lease_expires_at=now + lease,
            updated_at=now,
        )

    async def extend(self, job_id: str, owner: str, *, lease: timedelta) -> Job:
        await anyio.lowlevel.checkpoint()
        _check_lease(lease)
        job, now = self._held(job_id, owner)
        return self._store(job, lease_expires_at=now + lease, updated_at=now)

    async def complete(
        self, job_id: str, owner: str, *, result: dict[str, JsonValue] | None = None
    ) -> Job:
        await anyio.lowlevel.checkpoint()
        if result is not None:
            # Refused before anything changes: a result the model refuses would be stored
            # and make every later read of the job fail (the Postgres adapter reads back).
            _check_json(result)
            refuse_json_depth(result)
        job, now = self._held(job_id, owner)
        return self._store(
            job,
            status=JobStatus.SUCCEEDED,
            result=result,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=now,
        )

    async def fail(
        self, job_id: str, owner: str, *, error: str, retry: RetryPolicy | None = None
    ) -> Job:
        await anyio.lowlevel.checkpoint()
        job, now = self._held(job_id, owner)
        common: dict[str, object] = {
            "lease_owner": None,
            "lease_expires_at": None,
            "last_error": error,
            "updated_at": now,
        }
        if job.attempts < job.max_attempts:
            delay = (retry or _DEFAULT_RETRY).delay(job.attempts)
            requeued = self._store(job, status=JobStatus.QUEUED, available_at=now + delay, **common)
            self._notify(job.queue)
            return requeued
        return self._store(job, status=JobStatus.FAILED, **common)

    async def cancel(self, job_id: str) -> Job:
        await anyio.lowlevel.checkpoint()
        job = self._get(job_id)
        if job.status.is_terminal:
            return job
        return self._store(
            job,
            status=JobStatus.CANCELLED,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=self._clock.now(),
        )

    async def get(self, job_id: str) -> Job | None:
        await anyio.lowlevel.checkpoint()
        return self._jobs.get(job_id)

    async def depth(self, queue: str) -> int:
        await anyio.lowlevel.checkpoint()
        return sum(1 for j in self._jobs.values() if j.queue == queue and not j.status.is_terminal)

    async def wait(self, queue: str, *, timeout_s: float) -> None:
        """Return at once if a job is claimable now, else on the next enqueue/re-queue."""
        await anyio.lowlevel.checkpoint()
        now = self._clock.now()
        if any(j.queue == queue and _claimable(j, now) for j in self._jobs.values()):
            return
        event = self._events.setdefault(queue, anyio.Event())
        with anyio.move_on_after(max(timeout_s, 0.0)):
            await event.wait()

    # --- helpers --------------------------------------------------------------------------

    def _get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFound("no such job", job_id=job_id)
        return job

    def _held(self, job_id: str, owner: str) -> tuple[Job, datetime]:
        job = self._get(job_id)
        now = self._clock.now()
        held = (
            job.status is JobStatus.RUNNING
            and job.lease_owner == owner
            and job.lease_expires_at is not None
            and now < job.lease_expires_at
        )
        if not held:
            raise LeaseLost("lease not held", job_id=job_id, owner=owner)
        return job, now

    def _dead_letter_poison(self, queue: str, now: datetime) -> None:
        """Fail every job of ``queue`` whose lease expired on its final attempt."""
        for job in list(self._jobs.values()):
            if job.queue == queue and _expired(job, now) and job.attempts >= job.max_attempts:
                self._store(
                    job,
                    status=JobStatus.FAILED,
                    last_error=LEASE_EXPIRED_ON_FINAL_ATTEMPT,
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                )

    def _store(self, job: Job, **update: object) -> Job:
        # model_copy skips validation: every update above is built from valid values.
        new = job.model_copy(update=update)
        self._jobs[new.id] = new
        return new

    def _notify(self, queue: str) -> None:
        event = self._events.pop(queue, None)
        if event is not None:
            event.set()


def _expired(job: Job, now: datetime) -> bool:
    """A running job whose holder lost the lease."""
    return job.status is JobStatus.RUNNING and (
        job.lease_expires_at is None or job.lease_expires_at <= now
    )


def _claimable(job: Job, now: datetime) -> bool:
    if job.status is JobStatus.QUEUED:
        return job.available_at <= now
    return _expired(job, now) and job.attempts < job.max_attempts


def _check_lease(lease: timedelta) -> None:
    if lease <= timedelta(0):
        raise InvalidRequest("lease must be positive", lease_s=lease.total_seconds())


def _check_json(value: dict[str, JsonValue]) -> None:
    """Refuse what a JSON column would refuse (NaN, infinities), like the Postgres adapter."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest("payload is not valid JSON", error=str(exc)) from exc
