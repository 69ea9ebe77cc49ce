"""RedisAclWorkerCredentials: the WorkerCredentials port as Redis ACL users (Redis >= 7.0).

Checked against redis-server 7.0 (tests/integration/test_worker_acl.py):

- ``ACL SETUSER`` on an existing user changes what its *already authenticated*
  connections may do from their next command on, so ``bind`` reaches a warm standby
  that logged in long before its claim.
- ``ACL DELUSER`` closes every connection authenticated as that user: ``revoke`` cuts a
  worker off at once, not at its next login.
- Scripts run with the caller's permissions: both the keys passed to ``EVALSHA`` and every
  key a ``redis.call`` inside the script touches must be allowed. Workers get ``EVALSHA``
  and ``SCRIPT LOAD`` (redis-py's ``Script`` loads on ``NOSCRIPT``), not ``EVAL``. A
  script still runs arbitrary Lua, so a hostile worker can busy the server for
  ``busy-reply-threshold`` (``SCRIPT KILL`` ends a read-only one): a denial of service on
  the shared Redis, not a way to other keys.
- ACL users are server-wide (every database): the username carries the owner so several
  managers on one Redis keep apart, and the reconciler finds its own leftovers by prefix.
- ``bind`` is two commands (the user must exist, then ``SETUSER`` adds keys) and
  ``SETUSER`` makes a missing user: a ``DELUSER`` landing between them left a passwordless
  (unusable) user behind until the next reconcile pass. ACL commands cannot run in a
  script and ``WATCH`` does not cover users, so issue, bind and revoke of one slot take a
  per-slot lock in this instance: one manager process owns its owner's logins and shares
  one instance (tests/integration/test_worker_acl.py has the interleaving).
- Redis keeps ``ACL SETUSER`` users in memory only (an ``aclfile`` and ``ACL SAVE`` would
  persist them; the manager does not own the server's config): a restart, even with AOF,
  loses every login. The instance remembers each live slot's rules (the password as its
  SHA-256, which ``SETUSER`` takes as ``#<hex>``, and the keys bound) so ``restore`` can
  make lost logins again with the same password; workers re-authenticate on their own.

A user's commands: ``PING``, ``SELECT`` (the URL's database), the stream commands a
worker runs (``XREAD``, ``XREADGROUP``, ``XACK``, ``XADD``, ``XGROUP CREATE``,
``XAUTOCLAIM``, ``XPENDING``, ``XLEN``, ``XDEL``: handled input entries, so prompts do not
pile up; ``XREVRANGE``: the idempotent publish script reads the output stream's newest
entry, nothing ``XREAD`` could not read already), ``DEL`` (the standby stream, once read),
``EVALSHA`` and ``SCRIPT LOAD``; no channels. Keys are exact names, not
``worker:{id}:*``: a worker id such as ``commands`` or ``standby`` would otherwise match
the command streams or every standby stream.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import anyio
import redis.asyncio as aioredis
import redis.exceptions as rexc
from pydantic import SecretStr

from codeyard.domain.errors import CodeyardError, NotFound, ServiceUnavailable
from codeyard.domain.streams import standby_stream, worker_input_stream, worker_output_stream
from codeyard.domain.worker_access import WorkerAclUnavailable, WorkerLogin

USER_PREFIX = "codeyard-worker:"
WORKER_COMMANDS = (
    "+ping",
    "+select",
    "+xread",
    "+xreadgroup",
    "+xack",
    "+xadd",
    "+xgroup|create",
    "+xautoclaim",
    "+xpending",
    "+xlen",
    "+xdel",
    "+xrevrange",
    "+del",
    "+evalsha",
    "+script|load",
)
_TURN_OFF = "set CODEYARD_MANAGER__WORKER_REDIS_ACL=false (workers then log in as the manager)"


@contextmanager
def _translated(op: str) -> Iterator[None]:
    try:
        yield
    except (rexc.ConnectionError, rexc.TimeoutError, TimeoutError) as exc:
        raise ServiceUnavailable(f"redis unreachable during {op}", service="redis") from exc
    except rexc.NoPermissionError as exc:
        raise WorkerAclUnavailable(
            f"the manager's Redis user may not manage per-worker ACL users: {_TURN_OFF}",
            service="redis",
            op=op,
            reply=str(exc),
        ) from exc
    except rexc.ResponseError as exc:
        if "unknown command" in str(exc).lower():
            raise WorkerAclUnavailable(
                f"this Redis has no ACL command (renamed or too old): {_TURN_OFF}",
                service="redis",
                op=op,
                reply=str(exc),
            ) from exc
        raise CodeyardError("redis refused an ACL command", op=op, reply=str(exc)) from exc
    except rexc.RedisError as exc:
        raise CodeyardError(f"redis error during {op}", op=op) from exc


@dataclass
class _Issued:
    """What a live slot's login was made with: enough to make it again, no plain text."""

    password_sha256: str
    keys: set[str] = field(default_factory=set)

    def rules(self) -> tuple[str, ...]:
        keys = (f"~{k}" for k in sorted(self.keys))
        on = ("reset", "on", f"#{self.password_sha256}", "resetchannels")
        return (*on, *WORKER_COMMANDS, *keys)


class RedisAclWorkerCredentials:
    """One Redis ACL user per worker slot (``codeyard-worker:{owner}:{slot}``)."""

    def __init__(self, client: aioredis.Redis, *, owner: str) -> None:
        self._redis = client
        self._owner = owner
        self._prefix = f"{USER_PREFIX}{owner}:"
        self._locks: dict[str, anyio.Lock] = {}
        #: Live slots' rules, for ``restore`` (module docstring); changed under the lock.
        self._issued: dict[str, _Issued] = {}

    def username(self, slot: str) -> str:
        return self._prefix + slot

    async def check(self) -> None:
        # A throw-away user outside the worker prefix, so no slot's login is touched.
        probe = f"codeyard-acl-check:{self._owner}"
        with _translated("check"):
            await self._acl("SETUSER", probe, "reset", "off")
            await self._acl("DELUSER", probe)

    async def issue(self, slot: str) -> WorkerLogin:
        password = secrets.token_hex(24)
        digest = hashlib.sha256(password.encode()).hexdigest()
        issued = _Issued(digest, {standby_stream(slot)})
        async with self._ordered(slot):
            # The earlier password stops working whatever the outcome: forget it first.
            self._issued.pop(slot, None)
            with _translated("issue"):
                await self._acl("SETUSER", self.username(slot), *issued.rules())
            self._issued[slot] = issued
        return WorkerLogin(username=self.username(slot), password=SecretStr(password))

    async def bind(self, slot: str, worker_id: str) -> None:
        keys = (worker_input_stream(worker_id), worker_output_stream(worker_id))
        async with self._ordered(slot):
            try:
                await self._user(slot)  # SETUSER would create a missing user (a leak)...
            except NotFound:
                # ...but a live slot's login lost with a Redis restart is made again: a
                # claim need not wait for the next restore pass.
                if not await self._recreate(slot):
                    raise
            with _translated("bind"):
                await self._acl("SETUSER", self.username(slot), *(f"~{k}" for k in keys))
            if (issued := self._issued.get(slot)) is not None:
                issued.keys.update(keys)

    async def revoke(self, slot: str) -> None:
        async with self._ordered(slot):
            self._issued.pop(slot, None)  # never restored again, even if DELUSER fails
            with _translated("revoke"):
                await self._acl("DELUSER", self.username(slot))

    async def restore(self) -> tuple[str, ...]:
        if not self._issued:
            return ()  # nothing to list: no ACL traffic while idle
        lost = sorted(set(self._issued) - set(await self.slots()))
        restored: list[str] = []
        for slot in lost:
            async with self._ordered(slot):
                # Re-checked under the lock: an issue or revoke may have run since the listing.
                if not await self._exists(slot) and await self._recreate(slot):
                    restored.append(slot)
        return tuple(restored)

    async def keys(self, slot: str) -> tuple[str, ...]:
        raw = (await self._user(slot)).get("keys") or ""
        patterns = raw.split() if isinstance(raw, str) else list(raw)  # 7.x: one string
        return tuple(sorted(p.removeprefix("~") for p in patterns))

    async def slots(self) -> tuple[str, ...]:
        with _translated("slots"):
            users = await self._acl("USERS")
        names = (u.decode() if isinstance(u, bytes) else str(u) for u in users)
        return tuple(
            sorted(n.removeprefix(self._prefix) for n in names if n.startswith(self._prefix))
        )

    @asynccontextmanager
    async def _ordered(self, slot: str) -> AsyncIterator[None]:
        """One issue/bind/revoke of ``slot`` at a time (module docstring)."""
        lock = self._locks.setdefault(slot, anyio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(slot, None)

    async def _acl(self, *args: str) -> Any:
        # redis-py's execute_command is untyped; the ACL replies are checked by the callers.
        return await cast(Any, self._redis).execute_command("ACL", *args)

    async def _exists(self, slot: str) -> bool:
        with _translated("getuser"):
            return bool(await self._redis.acl_getuser(self.username(slot)))

    async def _recreate(self, slot: str) -> bool:
        """Make ``slot``'s remembered login again (caller holds its lock and saw it missing);
        False when the slot is not live here."""
        issued = self._issued.get(slot)
        if issued is None:
            return False
        with _translated("restore"):
            await self._acl("SETUSER", self.username(slot), *issued.rules())
        return True

    async def _user(self, slot: str) -> dict[str, Any]:
        with _translated("getuser"):
            info = await self._redis.acl_getuser(self.username(slot))
        if not info:
            raise NotFound("no login for this worker slot", slot=slot)
        return dict(info)
