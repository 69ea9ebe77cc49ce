"""Rows <-> domain models, and JSON in and out of JSONB columns.

JSON crosses the driver as *text*: parameters are sent as ``$n::text::jsonb`` and columns
are read as ``col::text``, with ``json.dumps``/``json.loads`` on this side. That keeps the
adapters independent of how the pool was configured: they work whether or not the entry
point registered a JSONB type codec on its connections (asyncpg's default returns text).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import asyncpg
from pydantic import JsonValue

from codeyard.domain.errors import InvalidRequest
from codeyard.domain.task import Job
from codeyard.domain.worker import WorkerRecord

JOB_COLUMNS = (
    "id, queue, payload::text AS payload, status, attempts, max_attempts, lease_owner,"
    " lease_expires_at, available_at, created_at, updated_at, last_error,"
    " result::text AS result"
)

WORKER_COLUMNS = (
    "worker_id, spec::text AS spec, status, host, container_id, image, ip, task_id,"
    " created_at, heartbeat_at, error, started_at, ended_at"
)


def dump_json(value: Mapping[str, JsonValue] | None) -> str | None:
    """JSON text for a ``$n::text::jsonb`` parameter; ``InvalidRequest`` if not JSON."""
    if value is None:
        return None
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidRequest("value is not valid JSON", error=str(exc)) from exc


def _load_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def job_from_row(row: asyncpg.Record) -> Job:
    data = dict(row.items())
    data["payload"] = _load_json(data["payload"])
    data["result"] = _load_json(data["result"])
    return Job.parse(data)


def worker_from_row(row: asyncpg.Record) -> WorkerRecord:
    data = dict(row.items())
    data["spec"] = _load_json(data["spec"])
    return WorkerRecord.parse(data)
