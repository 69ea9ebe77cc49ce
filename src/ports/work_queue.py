"""WorkQueue: durable jobs with leases, retries and a dead letter."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from pydantic import JsonValue

from codeyard.domain.task import Job, RetryPolicy


@runtime_checkable
class WorkQueue(Protocol):
    """Contract:

    - ``enqueue`` with an explicit ``job_id`` is idempotent: a second call returns the
      existing job unchanged.
    - ``claim`` hands each available job to exactly one caller (even under concurrency),
      increments ``attempts``, sets status ``running`` and a lease until now + ``lease``;
      returns ``None`` when nothing is available. A running job whose lease expired is
      available again (the crashed holder lost it).
    - ``extend``, ``complete`` and ``fail`` require the caller to hold the lease
      (``owner`` and unexpired), else ``LeaseLost``; unknown ids raise ``JobNotFound``.
    - ``fail`` re-queues with ``retry.delay(attempts)`` while attempts remain, else marks the
      job ``failed`` (dead letter) keeping ``last_error``.
    - ``cancel`` marks a non-terminal job cancelled; a running holder finds out via
      ``LeaseLost`` on its next call.
    - ``wait`` returns when a job may be available in ``queue`` or after ``timeout_s``; it is
      only a hint (implementations may wake early).
    - Storage unreachable: ``ServiceUnavailable``. A cancelled call either happened or not.
    """

    async def enqueue(
        self,
        queue: str,
        payload: dict[str, JsonValue],
        *,
        job_id: str | None = None,
        max_attempts: int = 3,
        available_at: datetime | None = None,
    ) -> Job:
        """Add a job; returns it as stored."""
        ...

    async def claim(self, queue: str, owner: str, *, lease: timedelta) -> Job | None:
        """Take the oldest available job of ``queue`` for ``owner``."""
        ...

    async def extend(self, job_id: str, owner: str, *, lease: timedelta) -> Job:
        """Push the lease of a held job to now + ``lease``."""
        ...

    async def complete(
        self, job_id: str, owner: str, *, result: dict[str, JsonValue] | None = None
    ) -> Job:
        """Mark a held job succeeded."""
        ...

    async def fail(
        self, job_id: str, owner: str, *, error: str, retry: RetryPolicy | None = None
    ) -> Job:
        """Record a failed attempt; retried later or dead-lettered."""
        ...

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job that has not finished. Terminal jobs are returned unchanged."""
        ...

    async def get(self, job_id: str) -> Job | None:
        """The job, or ``None``."""
        ...

    async def depth(self, queue: str) -> int:
        """Jobs of ``queue`` queued or running (not terminal)."""
        ...

    async def wait(self, queue: str, *, timeout_s: float) -> None:
        """Block until a job may be claimable in ``queue`` or the timeout passes."""
        ...
