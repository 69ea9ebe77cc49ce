"""WorkerRegistry: the durable list of workers, their state and heartbeats."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from codeyard.domain.worker import WorkerRecord, WorkerStatus


@runtime_checkable
class WorkerRegistry(Protocol):
    """Contract:

    - ``register`` stores a new record; registering an existing ``worker_id`` raises
      ``AlreadyExists``. Other methods raise ``WorkerNotFound`` for unknown ids, except
      ``get`` (returns ``None``) and ``deregister`` (idempotent).
    - ``set_status`` enforces the transition rules of
      :func:`codeyard.domain.worker.check_transition` (``InvalidTransition``).
    - ``heartbeat`` updates ``heartbeat_at`` (and optionally status); on a terminal worker
      it raises ``InvalidTransition``.
    - Timings, stamped with the registry's own clock (never the caller's ``at``) by the same
      atomic write as the status change, whether by ``set_status`` or ``heartbeat(status=)``:
      ``started_at`` the first time the worker is RUNNING, IDLE or BUSY, never overwritten
      (UNHEALTHY -> RUNNING keeps it); ``ended_at`` when it reaches STOPPED or FAILED.
      ``register`` stores both as given (normally ``None``).
    - ``list_active`` returns non-terminal workers ordered by ``created_at``;
      ``stale(older_than)`` those of them whose last heartbeat is before ``older_than``.
    - Each call is atomic; a cancelled call either happened entirely or not at all.
    - Storage unreachable: ``ServiceUnavailable``.
    """

    async def register(self, record: WorkerRecord) -> WorkerRecord:
        """Store a new worker; returns it as stored."""
        ...

    async def get(self, worker_id: str) -> WorkerRecord | None:
        """The worker, or ``None``."""
        ...

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
        """Move a worker to ``status``, updating the given optional fields."""
        ...

    async def heartbeat(
        self, worker_id: str, *, at: datetime | None = None, status: WorkerStatus | None = None
    ) -> WorkerRecord:
        """Record that the worker is alive (``at`` defaults to now)."""
        ...

    async def deregister(self, worker_id: str) -> None:
        """Forget the worker. Idempotent."""
        ...

    async def list_active(self) -> list[WorkerRecord]:
        """Non-terminal workers, oldest first."""
        ...

    async def stale(self, older_than: datetime) -> list[WorkerRecord]:
        """Active workers whose heartbeat is older than ``older_than``."""
        ...
