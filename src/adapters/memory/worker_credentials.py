"""InMemoryWorkerCredentials: the WorkerCredentials port without a service (unit tests, and
a manager whose workers use no per-worker login)."""

from __future__ import annotations

import secrets

import anyio.lowlevel
from pydantic import SecretStr

from codeyard.domain.errors import NotFound
from codeyard.domain.streams import standby_stream, worker_input_stream, worker_output_stream
from codeyard.domain.worker_access import WorkerAclUnavailable, WorkerLogin

USER_PREFIX = "codeyard-worker:"


class InMemoryWorkerCredentials:
    """Logins in a dict, ``(owner, slot) -> (password, keys)``; pass the same ``logins``
    to several instances to model owners sharing one service. ``acl_allowed=False``
    models a service that refuses ``ACL`` (``check`` raises)."""

    def __init__(
        self,
        owner: str,
        *,
        logins: dict[tuple[str, str], tuple[str, set[str]]] | None = None,
        acl_allowed: bool = True,
    ) -> None:
        self._owner = owner
        self._logins = {} if logins is None else logins
        self._acl_allowed = acl_allowed

    async def check(self) -> None:
        await anyio.lowlevel.checkpoint()
        if not self._acl_allowed:
            raise WorkerAclUnavailable("this store refuses per-worker logins", service="memory")

    async def issue(self, slot: str) -> WorkerLogin:
        await anyio.lowlevel.checkpoint()
        password = secrets.token_hex(24)
        self._logins[(self._owner, slot)] = (password, {standby_stream(slot)})
        return WorkerLogin(
            username=f"{USER_PREFIX}{self._owner}:{slot}", password=SecretStr(password)
        )

    async def bind(self, slot: str, worker_id: str) -> None:
        await anyio.lowlevel.checkpoint()
        self._login(slot)[1].update(
            (worker_input_stream(worker_id), worker_output_stream(worker_id))
        )

    async def revoke(self, slot: str) -> None:
        await anyio.lowlevel.checkpoint()
        self._logins.pop((self._owner, slot), None)

    async def keys(self, slot: str) -> tuple[str, ...]:
        await anyio.lowlevel.checkpoint()
        return tuple(sorted(self._login(slot)[1]))

    async def slots(self) -> tuple[str, ...]:
        await anyio.lowlevel.checkpoint()
        return tuple(sorted(slot for owner, slot in self._logins if owner == self._owner))

    def _login(self, slot: str) -> tuple[str, set[str]]:
        login = self._logins.get((self._owner, slot))
        if login is None:
            raise NotFound("no login for this worker slot", slot=slot)
        return login
