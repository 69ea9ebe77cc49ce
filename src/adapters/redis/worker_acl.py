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

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
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


class RedisAclWorkerCredentials:
    """One Redis ACL user per worker slot (``codeyard-worker:{owner}:{slot}``)."""

    def __init__(self, client: aioredis.Redis, *, owner: str) -> None:
        self._redis = client
        self._owner = owner
        self._prefix = f"{USER_PREFIX}{owner}:"
        self._locks: dict[str, anyio.Lock] = {}

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
        rules = ("reset", "on", f">{password}", "resetchannels", *WORKER_COMMANDS)
        async with self._ordered(slot):
            with _translated("issue"):
                user = self.username(slot)
                await self._acl("SETUSER", user, *rules, f"~{standby_stream(slot)}")
        return WorkerLogin(username=self.username(slot), password=SecretStr(password))

    async def bind(self, slot: str, worker_id: str) -> None:
        keys = (worker_input_stream(worker_id), worker_output_stream(worker_id))
        async with self._ordered(slot):
            await self._user(slot)  # SETUSER would create a missing user (disabled, a leak)
            with _translated("bind"):
                await self._acl("SETUSER", self.username(slot), *(f"~{k}" for k in keys))

    async def revoke(self, slot: str) -> None:
        async with self._ordered(slot):
            with _translated("revoke"):
                await self._acl("DELUSER", self.username(slot))

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

    async def _user(self, slot: str) -> dict[str, Any]:
        with _translated("getuser"):
            info = await self._redis.acl_getuser(self.username(slot))
        if not info:
            raise NotFound("no login for this worker slot", slot=slot)
        return dict(info)
