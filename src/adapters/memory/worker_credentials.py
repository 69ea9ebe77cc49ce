"""InMemoryWorkerCredentials: the WorkerCredentials port without a service (unit tests, and
a manager whose workers use no per-worker login)."""

from __future__ import annotations

import hashlib
import secrets

import anyio.lowlevel
from pydantic import SecretStr

from codeyard.domain.errors import NotFound
from codeyard.domain.streams import standby_stream, worker_input_stream, worker_output_stream
from codeyard.domain.worker_access import WorkerAclUnavailable, WorkerLogin

USER_PREFIX = "codeyard-worker:"


def _sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


class InMemoryWorkerCredentials:
    """Logins in a dict that models the service, ``(owner, slot) -> (password SHA-256,
    keys)``; pass the same ``logins`` to several instances to model owners sharing one
    service, and :meth:`lose_all` (or clearing it) models a Redis restart, which loses
    them. ``acl_allowed=False`` models a service that refuses ``ACL`` (``check`` raises).
    The instance remembers what it issued and bound, as the Redis adapter does."""

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
        self._issued: dict[str, tuple[str, set[str]]] = {}

    async def check(self) -> None:
        await anyio.lowlevel.checkpoint()
        if not self._acl_allowed:
            raise WorkerAclUnavailable("this store refuses per-worker logins", service="memory")

    async def issue(self, slot: str) -> WorkerLogin:
        await anyio.lowlevel.checkpoint()
        password = secrets.token_hex(24)
        self._issued[slot] = (_sha256(password), {standby_stream(slot)})
        self._put(slot)
        return WorkerLogin(
            username=f"{USER_PREFIX}{self._owner}:{slot}", password=SecretStr(password)
        )

    async def bind(self, slot: str, worker_id: str) -> None:
        await anyio.lowlevel.checkpoint()
        if (self._owner, slot) not in self._logins and slot in self._issued:
            self._put(slot)  # lost by the service: made again, as the Redis adapter does
        keys = (worker_input_stream(worker_id), worker_output_stream(worker_id))
        self._login(slot)[1].update(keys)
        if slot in self._issued:
            self._issued[slot][1].update(keys)

    async def revoke(self, slot: str) -> None:
        await anyio.lowlevel.checkpoint()
        self._issued.pop(slot, None)
        self._logins.pop((self._owner, slot), None)

    async def restore(self) -> tuple[str, ...]:
        await anyio.lowlevel.checkpoint()
        lost = sorted(s for s in self._issued if (self._owner, s) not in self._logins)
        for slot in lost:
            self._put(slot)
        return tuple(lost)

    async def keys(self, slot: str) -> tuple[str, ...]:
        await anyio.lowlevel.checkpoint()
        return tuple(sorted(self._login(slot)[1]))

    async def slots(self) -> tuple[str, ...]:
        await anyio.lowlevel.checkpoint()
        return tuple(sorted(slot for owner, slot in self._logins if owner == self._owner))

    def lose_all(self) -> None:
        """The service forgets every login (every owner's): a Redis restart."""
        self._logins.clear()

    def authenticates(self, username: str, password: str) -> bool:
        """Whether the service would let ``username`` log in with ``password``."""
        owner, _, slot = username.removeprefix(USER_PREFIX).partition(":")
        login = self._logins.get((owner, slot))
        return login is not None and secrets.compare_digest(login[0], _sha256(password))

    def _put(self, slot: str) -> None:
        digest, keys = self._issued[slot]
        self._logins[(self._owner, slot)] = (digest, set(keys))

    def _login(self, slot: str) -> tuple[str, set[str]]:
        login = self._logins.get((self._owner, slot))
        if login is None:
            raise NotFound("no login for this worker slot", slot=slot)
        return login
