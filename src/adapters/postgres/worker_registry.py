"""A :class:`~codeyard.ports.worker_registry.WorkerRegistry` on PostgreSQL, table
``codeyard_workers`` (the spec as JSONB).

Status changes read the row with ``SELECT ... FOR UPDATE`` and apply the domain's rules
(:meth:`WorkerRecord.with_status` / :func:`check_transition`) inside one transaction, so
two concurrent updates cannot both pass a check against the same old state. ``heartbeat``
without ``at`` stamps the database's ``now()`` (compute ``stale``'s ``older_than`` from a
clock close to it). ``created_at`` and explicit ``at`` values are stored as given.

``started_at``/``ended_at`` are stamped with ``now()`` by the same ``UPDATE`` that writes
the new status (:data:`_TIMINGS`, the SQL twin of :meth:`WorkerRecord.stamped`), so a
timing and the move that caused it commit together.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from codeyard.adapters.postgres._codec import WORKER_COLUMNS, dump_json, worker_from_row
from codeyard.adapters.postgres._errors import translated
from codeyard.domain.errors import (
    AlreadyExists,
    InvalidRequest,
    InvalidTransition,
    WorkerNotFound,
)
from codeyard.domain.worker import UP_STATUSES, WorkerRecord, WorkerStatus, check_transition

if TYPE_CHECKING:
    from typing import TypeAlias

    from asyncpg.pool import PoolConnectionProxy

    _Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]

_ACTIVE = "status NOT IN ('stopped', 'failed')"
_UP = ", ".join(f"'{s.value}'" for s in sorted(UP_STATUSES))
# $2 is the new status in both UPDATEs; COALESCE keeps a timing once set.
_TIMINGS = f"""
    started_at = CASE WHEN $2 IN ({_UP}) THEN COALESCE(started_at, now()) ELSE started_at END,
    ended_at = CASE WHEN $2 IN ('stopped', 'failed') THEN COALESCE(ended_at, now())
                    ELSE ended_at END"""
_INSERT = f"""
    INSERT INTO codeyard_workers (worker_id, spec, status, host, container_id, image, ip,
                                  task_id, created_at, heartbeat_at, error, started_at,
                                  ended_at)
    VALUES ($1, $2::text::jsonb, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
    ON CONFLICT (worker_id) DO NOTHING
    RETURNING {WORKER_COLUMNS}"""
_SELECT = f"SELECT {WORKER_COLUMNS} FROM codeyard_workers WHERE worker_id = $1"
_LOCK = f"{_SELECT} FOR UPDATE"
_SET_STATUS = f"""
    UPDATE codeyard_workers SET status = $2, error = $3, container_id = $4, ip = $5, task_id = $6,
    {_TIMINGS}
    WHERE worker_id = $1 RETURNING {WORKER_COLUMNS}"""
_HEARTBEAT = f"""
    UPDATE codeyard_workers SET status = $2, heartbeat_at = COALESCE($3, now()),
    {_TIMINGS}
    WHERE worker_id = $1 RETURNING {WORKER_COLUMNS}"""
_LIST_ACTIVE = (
    f"SELECT {WORKER_COLUMNS} FROM codeyard_workers WHERE {_ACTIVE} ORDER BY created_at, seq"
)
_STALE = f"""
    SELECT {WORKER_COLUMNS} FROM codeyard_workers WHERE {_ACTIVE} AND heartbeat_at < $1
    ORDER BY created_at, seq"""


class PostgresWorkerRegistry:
    """Worker records in ``codeyard_workers`` (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def register(self, record: WorkerRecord) -> WorkerRecord:
        r = record
        args = (
            r.worker_id,
            dump_json(r.spec.model_dump(mode="json")),
            r.status.value,
            r.host,
            r.container_id,
            r.image,
            r.ip,
            r.task_id,
            r.created_at,
            r.heartbeat_at,
            r.error,
            r.started_at,
            r.ended_at,
        )
        with translated("register"):
            row = await self._pool.fetchrow(_INSERT, *args)
        if row is None:
            raise AlreadyExists("worker already registered", worker_id=record.worker_id)
        return worker_from_row(row)

    async def get(self, worker_id: str) -> WorkerRecord | None:
        with translated("get"):
            row = await self._pool.fetchrow(_SELECT, worker_id)
        return None if row is None else worker_from_row(row)

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
        with translated("set_status"):
            async with self._pool.acquire() as conn, conn.transaction():
                current = await _locked(conn, worker_id)
                new = current.with_status(status, error=error)
                # Validate the new values through the model (task_id must be a Name...).
                new = WorkerRecord.parse(
                    {
                        **new.model_dump(),
                        "container_id": _given(container_id, new.container_id),
                        "ip": _given(ip, new.ip),
                        "task_id": _given(task_id, new.task_id),
                    }
                )
                row = await conn.fetchrow(
                    _SET_STATUS,
                    worker_id,
                    new.status.value,
                    new.error,
                    new.container_id,
                    new.ip,
                    new.task_id,
                )
        assert row is not None  # locked by this transaction
        return worker_from_row(row)

    async def heartbeat(
        self, worker_id: str, *, at: datetime | None = None, status: WorkerStatus | None = None
    ) -> WorkerRecord:
        with translated("heartbeat"):
            async with self._pool.acquire() as conn, conn.transaction():
                current = await _locked(conn, worker_id)
                new_status = status or current.status
                if current.status.is_terminal:
                    raise InvalidTransition(
                        "a terminal worker cannot heartbeat",
                        worker_id=worker_id,
                        current=current.status.value,
                        requested=new_status.value,
                    )
                if new_status is not current.status:  # not a transition
                    check_transition(worker_id, current.status, new_status)
                if at is not None:  # same validation as the model's (aware datetime)
                    WorkerRecord.parse({**current.model_dump(), "heartbeat_at": at})
                row = await conn.fetchrow(_HEARTBEAT, worker_id, new_status.value, at)
        assert row is not None  # locked by this transaction
        return worker_from_row(row)

    async def deregister(self, worker_id: str) -> None:
        with translated("deregister"):
            await self._pool.execute("DELETE FROM codeyard_workers WHERE worker_id = $1", worker_id)

    async def list_active(self) -> list[WorkerRecord]:
        with translated("list_active"):
            rows = await self._pool.fetch(_LIST_ACTIVE)
        return [worker_from_row(row) for row in rows]

    async def stale(self, older_than: datetime) -> list[WorkerRecord]:
        _check_aware(older_than)
        with translated("stale"):
            rows = await self._pool.fetch(_STALE, older_than)
        return [worker_from_row(row) for row in rows]


async def _locked(conn: _Conn, worker_id: str) -> WorkerRecord:
    row = await conn.fetchrow(_LOCK, worker_id)
    if row is None:
        raise WorkerNotFound("no such worker", worker_id=worker_id)
    return worker_from_row(row)


def _given(value: str | None, current: str | None) -> str | None:
    return current if value is None else value


def _check_aware(value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRequest("datetime must be timezone-aware", value=value.isoformat())
