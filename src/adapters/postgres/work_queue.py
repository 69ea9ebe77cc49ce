"""A :class:`~codeyard.ports.work_queue.WorkQueue` on PostgreSQL (asyncpg), table ``codeyard_jobs``.

* **Time is the database's.** Leases, ``available_at`` defaults, retry delays and every
  ``updated_at`` use ``now()`` on the server, so workers on hosts with skewed clocks agree
  on who holds a lease. (An explicit ``available_at`` passed to ``enqueue`` is compared with
  the server's clock.) Note ``now()`` is the start of the transaction.
* **Claiming** is one ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1)``:
  concurrent claimers skip each other's rows and never get the same job. A lease is held
  while ``now() < lease_expires_at``; from ``lease_expires_at`` on, the job is claimable if
  ``attempts < max_attempts``, else a CTE of the same statement dead-letters it (locking it
  ``FOR UPDATE SKIP LOCKED`` too, so a row another transaction holds is left to that one).
* **Lease checks** are in the ``WHERE`` of the write; when it matches nothing, a second
  query tells ``JobNotFound`` (no such id; jobs are never deleted) from ``LeaseLost``.
* **wait** LISTENs on channel ``codeyard_jobs`` (a trigger notifies the queue name whenever
  a job becomes ``queued``) and polls every ``poll_interval_s`` as a fallback (lease
  expiry, delayed jobs coming due and lost notifications send no notification). The
  LISTEN connection is taken from the pool on the first ``wait`` and held until
  :meth:`PostgresWorkQueue.aclose` - call it (or use ``async with``) before closing the pool.
* Driver errors are translated (see ``_errors``); the adapter runs on asyncio only
  (asyncpg's requirement).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import asyncpg
import asyncpg.exceptions
from pydantic import JsonValue

from codeyard.adapters.postgres._codec import JOB_COLUMNS, dump_json, job_from_row
from codeyard.adapters.postgres._errors import translated
from codeyard.domain.base import refuse_json_depth
from codeyard.domain.errors import InvalidRequest, JobNotFound, LeaseLost
from codeyard.domain.task import Job, RetryPolicy
from codeyard.ports.work_queue import LEASE_EXPIRED_ON_FINAL_ATTEMPT

if TYPE_CHECKING:
    from typing import TypeAlias

    from asyncpg.pool import PoolConnectionProxy

    _Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]

CHANNEL = "codeyard_jobs"
_DEFAULT_RETRY = RetryPolicy()
# Giving the LISTEN connection back is best effort: a dead connection is dropped by the pool.
_CLEANUP_ERRORS = (OSError, asyncpg.exceptions.InterfaceError, asyncpg.exceptions.PostgresError)

_EXPIRED = "status = 'running' AND lease_expires_at <= now()"
_CLAIMABLE = f"""
    queue = $1 AND (
        (status = 'queued' AND available_at <= now())
        OR ({_EXPIRED} AND attempts < max_attempts)
    )"""
_HELD = "id = $1 AND lease_owner = $2 AND status = 'running' AND lease_expires_at > now()"
_RELEASE = "lease_owner = NULL, lease_expires_at = NULL, updated_at = now()"

_INSERT = f"""
    INSERT INTO codeyard_jobs (id, queue, payload, max_attempts, available_at)
    VALUES ($1, $2, $3::text::jsonb, $4, COALESCE($5, now()))
    ON CONFLICT (id) DO NOTHING
    RETURNING {JOB_COLUMNS}"""
_SELECT = f"SELECT {JOB_COLUMNS} FROM codeyard_jobs WHERE id = $1"
# $4: the dead letter's last_error. MATERIALIZED locks the poison rows once (a locking
# subquery under IN may be re-run); a data-modifying CTE always runs to completion.
_CLAIM = f"""
    WITH poison AS MATERIALIZED (
        SELECT id FROM codeyard_jobs
        WHERE queue = $1 AND {_EXPIRED} AND attempts >= max_attempts
        FOR UPDATE SKIP LOCKED
    ), dead AS (
        UPDATE codeyard_jobs SET status = 'failed', last_error = $4, {_RELEASE}
        WHERE id IN (SELECT id FROM poison)
    )
    UPDATE codeyard_jobs SET
        status = 'running', attempts = attempts + 1, lease_owner = $2,
        lease_expires_at = now() + $3::interval, updated_at = now()
    WHERE id = (
        SELECT id FROM codeyard_jobs WHERE {_CLAIMABLE}
        ORDER BY available_at, created_at, seq
        LIMIT 1 FOR UPDATE SKIP LOCKED
    )
    RETURNING {JOB_COLUMNS}"""
_EXTEND = f"""
    UPDATE codeyard_jobs SET lease_expires_at = now() + $3::interval, updated_at = now()
    WHERE {_HELD} RETURNING {JOB_COLUMNS}"""
_COMPLETE = f"""
    UPDATE codeyard_jobs SET status = 'succeeded', result = $3::text::jsonb, {_RELEASE}
    WHERE {_HELD} RETURNING {JOB_COLUMNS}"""
_LOCK_HELD = f"SELECT attempts, max_attempts FROM codeyard_jobs WHERE {_HELD} FOR UPDATE"
_RETRY = f"""
    UPDATE codeyard_jobs SET
        status = 'queued', available_at = now() + $2::interval, last_error = $3, {_RELEASE}
    WHERE id = $1 RETURNING {JOB_COLUMNS}"""
_DEAD = f"""
    UPDATE codeyard_jobs SET status = 'failed', last_error = $2, {_RELEASE}
    WHERE id = $1 RETURNING {JOB_COLUMNS}"""
_CANCEL = f"""
    UPDATE codeyard_jobs SET status = 'cancelled', {_RELEASE}
    WHERE id = $1 AND status IN ('queued', 'running') RETURNING {JOB_COLUMNS}"""
_DEPTH = "SELECT count(*) FROM codeyard_jobs WHERE queue = $1 AND status IN ('queued', 'running')"
_ANY_CLAIMABLE = f"SELECT EXISTS (SELECT 1 FROM codeyard_jobs WHERE {_CLAIMABLE})"


class PostgresWorkQueue:
    """Durable jobs with leases in ``codeyard_jobs`` (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record], *, poll_interval_s: float = 5.0) -> None:
        if poll_interval_s <= 0:
            raise InvalidRequest("poll_interval_s must be positive", value=poll_interval_s)
        self._pool = pool
        self._poll_interval_s = poll_interval_s
        self._listener: _Conn | None = None
        self._listener_lock = anyio.Lock()
        self._events: dict[str, anyio.Event] = {}
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

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
        # Validate exactly as the model would (names, attempts, aware datetime) before storing.
        now = datetime.now(UTC)
        fields: dict[str, Any] = {
            "queue": queue,
            "payload": payload,
            "max_attempts": max_attempts,
            "available_at": available_at or now,
            "created_at": now,
            "updated_at": now,
        }
        if job_id is not None:
            fields["id"] = job_id
        job = Job.parse(fields)
        args = (job.id, job.queue, dump_json(job.payload), job.max_attempts, available_at)
        with translated("enqueue"):
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(_INSERT, *args)
                if row is None:  # already there: idempotent, return it unchanged
                    row = await conn.fetchrow(_SELECT, job.id)
        if row is None:  # pragma: no cover - jobs are never deleted
            raise JobNotFound("job vanished during enqueue", job_id=job.id)
        return job_from_row(row)

    async def claim(self, queue: str, owner: str, *, lease: timedelta) -> Job | None:
        _check_lease(lease)
        with translated("claim"):
            row = await self._pool.fetchrow(
                _CLAIM, queue, owner, lease, LEASE_EXPIRED_ON_FINAL_ATTEMPT
            )
        return None if row is None else job_from_row(row)

    async def extend(self, job_id: str, owner: str, *, lease: timedelta) -> Job:
        _check_lease(lease)
        return await self._held_write("extend", _EXTEND, job_id, owner, lease)

    async def complete(
        self, job_id: str, owner: str, *, result: dict[str, JsonValue] | None = None
    ) -> Job:
        if result is not None:
            # Checked before the write: a result the Job model refuses would be stored and
            # make every later read of the job fail.
            refuse_json_depth(result)
        return await self._held_write("complete", _COMPLETE, job_id, owner, dump_json(result))

    async def fail(
        self, job_id: str, owner: str, *, error: str, retry: RetryPolicy | None = None
    ) -> Job:
        with translated("fail"):
            async with self._pool.acquire() as conn, conn.transaction():
                held = await conn.fetchrow(_LOCK_HELD, job_id, owner)
                if held is None:
                    raise await _lease_error(conn, job_id, owner)
                attempts: int = held["attempts"]
                if attempts < held["max_attempts"]:
                    delay = (retry or _DEFAULT_RETRY).delay(attempts)
                    row = await conn.fetchrow(_RETRY, job_id, delay, error)
                else:
                    row = await conn.fetchrow(_DEAD, job_id, error)
        assert row is not None  # the row is locked by this transaction
        return job_from_row(row)

    async def cancel(self, job_id: str) -> Job:
        with translated("cancel"):
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(_CANCEL, job_id)
                if row is None:  # terminal (returned unchanged) or unknown
                    row = await conn.fetchrow(_SELECT, job_id)
        if row is None:
            raise JobNotFound("no such job", job_id=job_id)
        return job_from_row(row)

    async def get(self, job_id: str) -> Job | None:
        with translated("get"):
            row = await self._pool.fetchrow(_SELECT, job_id)
        return None if row is None else job_from_row(row)

    async def depth(self, queue: str) -> int:
        with translated("depth"):
            count: int = await self._pool.fetchval(_DEPTH, queue)
        return count

    async def wait(self, queue: str, *, timeout_s: float) -> None:
        """Return when a job may be claimable in ``queue`` (checked at once, then on every
        notification or poll), or after ``timeout_s``."""
        with anyio.move_on_after(max(timeout_s, 0.0)):
            await self._ensure_listener()
            while True:
                # Subscribe before checking, so an enqueue right after the check still wakes.
                event = self._events.setdefault(queue, anyio.Event())
                with translated("wait"):
                    if await self._pool.fetchval(_ANY_CLAIMABLE, queue):
                        return
                with anyio.move_on_after(self._poll_interval_s):
                    await event.wait()
                if event.is_set():
                    return
                await self._ensure_listener()  # LISTEN again if the connection was lost

    async def aclose(self) -> None:
        """Give the LISTEN connection back to the pool; later ``wait`` calls only poll."""
        async with self._listener_lock:
            self._closed = True
            await self._drop_listener()
        self._wake_all()

    # --- helpers --------------------------------------------------------------------------

    async def _held_write(
        self, operation: str, sql: str, job_id: str, owner: str, arg: object
    ) -> Job:
        with translated(operation):
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(sql, job_id, owner, arg)
                if row is None:
                    raise await _lease_error(conn, job_id, owner)
        return job_from_row(row)

    async def _ensure_listener(self) -> None:
        if self._closed or self._listener is not None:
            return
        async with self._listener_lock:
            if self._closed or self._listener is not None:
                return
            with translated("listen"):
                conn = await self._pool.acquire()
                try:
                    await conn.add_listener(CHANNEL, self._on_notify)
                    conn.add_termination_listener(self._on_listener_lost)
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await self._pool.release(conn)
                    raise
            self._listener = conn

    async def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is None:
            return
        # A connection that died was already taken back by the pool: these calls then
        # raise InterfaceError ("released back to the pool") or do nothing.
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(*_CLEANUP_ERRORS):
                conn.remove_termination_listener(self._on_listener_lost)
                await conn.remove_listener(CHANNEL, self._on_notify)
            with contextlib.suppress(*_CLEANUP_ERRORS):
                await self._pool.release(conn)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        event = self._events.pop(str(payload), None)
        if event is not None:
            event.set()

    def _on_listener_lost(self, _conn: object) -> None:
        # The pool has already reclaimed the dead connection: forget it, and wake every
        # waiter so that it re-checks the table and LISTENs again on a new connection.
        self._listener = None
        self._wake_all()

    def _wake_all(self) -> None:
        events, self._events = self._events, {}
        for event in events.values():
            event.set()


async def _lease_error(conn: _Conn, job_id: str, owner: str) -> JobNotFound | LeaseLost:
    if await conn.fetchval("SELECT 1 FROM codeyard_jobs WHERE id = $1", job_id) is None:
        return JobNotFound("no such job", job_id=job_id)
    return LeaseLost("lease not held", job_id=job_id, owner=owner)


def _check_lease(lease: timedelta) -> None:
    if lease <= timedelta(0):
        raise InvalidRequest("lease must be positive", lease_s=lease.total_seconds())
