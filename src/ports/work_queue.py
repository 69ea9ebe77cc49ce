"""WorkQueue: durable jobs with leases, retries and a dead letter."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final, Protocol, runtime_checkable

from pydantic import JsonValue

from codeyard.domain.task import Job, RetryPolicy

#: ``last_error`` of a job dead-lettered by ``claim`` because its holder's lease expired
#: while it had no attempts left (the worker most likely crashed on the job).
LEASE_EXPIRED_ON_FINAL_ATTEMPT: Final = "lease expired on the final attempt"


@runtime_checkable
class WorkQueue(Protocol):
    """Contract:

    - ``enqueue`` with an explicit ``job_id`` is idempotent: a second call returns the
      existing job unchanged.
    - ``claim`` hands each available job to exactly one caller (even under concurrency),
      increments ``attempts``, sets status ``running`` and a lease until now + ``lease``;
      returns ``None`` when nothing is available. Available means: ``queued`` with
      ``available_at <= now``, or ``running`` with an expired lease (``lease_expires_at <=
      now``: the holder lost it, most likely crashed) and ``attempts < max_attempts``.
    - Poison jobs: a ``running`` job whose lease expired with ``attempts >= max_attempts``
      is never handed out again. ``claim`` on its queue dead-letters it instead - status
      ``failed``, ``last_error`` = :data:`LEASE_EXPIRED_ON_FINAL_ATTEMPT` (replacing any
      earlier error), lease cleared, ``attempts`` unchanged - atomically (a concurrent
      ``claim``, ``extend``, ``complete`` or ``fail`` sees either the running job or the
      failed one), and goes on to claim another available job in the same call. Until some
      ``claim`` on its queue does that, such a job stays ``running`` (``depth`` counts it,
      ``wait`` does not wake for it) and its former holder already gets ``LeaseLost``.
    - Hence ``attempts <= max_attempts`` always holds, in every status; a ``queued`` job
      always has ``attempts < max_attempts``.
    - ``extend``, ``complete`` and ``fail`` require the caller to hold the lease
      (``owner`` and unexpired), else ``LeaseLost``; unknown ids raise ``JobNotFound``.
    - ``complete`` refuses a ``result`` that is not JSON (NaN, infinities) or nests deeper
      than ``JSON_MAX_DEPTH`` levels with ``InvalidRequest``, leaving the job unchanged
      (still held): a stored job must read back.
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
        """Dead-letter the expired poison jobs of ``queue``, then take its oldest available
        job for ``owner``."""
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
