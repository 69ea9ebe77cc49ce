"""The per-worker Redis logins the manager hands out (``worker_redis_acl``): issued or
bound when a worker is created, revoked when it is deleted or its create fails. Without
a :class:`~codeyard.ports.worker_credentials.WorkerCredentials` every call is a no-op."""

from __future__ import annotations

import structlog

from codeyard.domain.errors import CodeyardError
from codeyard.domain.worker_access import WorkerLogin
from codeyard.ports.worker_credentials import WorkerCredentials

log = structlog.get_logger(__name__)


class WorkerLoginGrants:
    def __init__(self, logins: WorkerCredentials | None) -> None:
        self._logins = logins
        #: The slot (login) of each worker this process made; after a restart the
        #: reconciler removes the logins of workers that are gone.
        self._slots: dict[str, str] = {}

    async def grant(self, slot: str, worker_id: str, *, issue: bool = False) -> WorkerLogin | None:
        """With per-worker Redis logins: ``slot``'s login (a new one with ``issue``), bound
        to the worker's streams before it reads its assignment."""
        if self._logins is None:
            return None
        self._slots[worker_id] = slot
        login = await self._logins.issue(slot) if issue else None
        await self._logins.bind(slot, worker_id)
        return login

    async def revoke(self, worker_id: str) -> None:
        if self._logins is None:
            return
        slot = self._slots.pop(worker_id, worker_id)
        try:
            await self._logins.revoke(slot)
        except CodeyardError as exc:  # the reconciler retries
            log.warning("worker login not revoked", worker_id=worker_id, error=str(exc))
