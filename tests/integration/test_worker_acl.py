"""Issue #9 "Isolation" on a real redis-server: a worker's ACL login can run the worker's
own stream traffic (through the real RedisEventBus, scripts included) and gets NOPERM
everywhere else; bind reaches an already connected standby; revoke cuts it off; a login
restored after a loss has the same password and limits."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

import anyio
import pytest
import redis.asyncio as aioredis
import redis.exceptions as rexc

from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.adapters.redis.worker_acl import RedisAclWorkerCredentials
from codeyard.domain.errors import CodeyardError
from codeyard.domain.streams import COMMANDS_STREAM
from codeyard.domain.worker_access import WorkerAclUnavailable, WorkerLogin

pytestmark = pytest.mark.anyio


@dataclass
class Acl:
    admin: aioredis.Redis
    creds: RedisAclWorkerCredentials
    url: str

    def login_url(self, login: WorkerLogin) -> str:
        user, password = quote(login.username, safe=""), login.password.get_secret_value()
        return self.url.replace("redis://", f"redis://{user}:{password}@", 1)


@pytest.fixture
async def acl(redis_db: str) -> AsyncIterator[Acl]:
    admin = aioredis.Redis.from_url(redis_db, decode_responses=True)
    creds = RedisAclWorkerCredentials(admin, owner="acl-" + uuid.uuid4().hex[:8])
    try:
        yield Acl(admin, creds, redis_db)
    finally:
        for slot in await creds.slots():
            await creds.revoke(slot)
        await admin.aclose()


async def test_a_worker_login_runs_its_own_traffic_and_nothing_else(acl: Acl) -> None:
    # Someone else's data that must stay out of reach.
    await acl.admin.xadd(COMMANDS_STREAM, {"command": "{}"})
    await acl.admin.xadd("worker:w2:input", {"input": "secret"})
    await acl.admin.xadd("worker:standby:pool-2", {"input": "{}"})
    await acl.admin.xadd("worker:standby:w1", {"input": "assignment"})
    login = await acl.creds.issue("w1")
    await acl.creds.bind("w1", "w1")
    bus = RedisEventBus.from_url(acl.login_url(login))
    raw = aioredis.Redis.from_url(acl.login_url(login), decode_responses=True)
    try:
        # The worker's own path, as worker_standby + worker_wrapper run it.
        assert [e.fields for e in await bus.read("worker:standby:w1")] == [{"input": "assignment"}]
        await bus.delete_stream("worker:standby:w1")
        await bus.ensure_group("worker:w1:input", "workers")
        await acl.admin.xadd("worker:w1:input", {"input": "prompt"})
        got = await bus.read_group("worker:w1:input", "workers", "c1", block_s=0.1)
        assert [m.fields for m in got] == [{"input": "prompt"}]
        page = await bus.claim_stale("worker:w1:input", "workers", "c2", min_idle_s=0)
        assert [m.id for m in page.messages] == [got[0].id]
        assert await bus.ack("worker:w1:input", "workers", [got[0].id]) == 1
        assert await bus.delete_entries("worker:w1:input", [got[0].id]) == 1  # handled
        await bus.publish("worker:w1:output", {"event": "ready"})
        await bus.publish_many("worker:w1:output", [{"event": "a"}, {"event": "b"}], maxlen=100)
        # The worker's own publishes are idempotent (XREVRANGE in the script): a repeat of
        # the last batch appends nothing.
        batch = [{"event": "c"}, {"event": "d"}]
        first = await bus.publish_many("worker:w1:output", batch, idempotent=True)
        assert await bus.publish_many("worker:w1:output", batch, idempotent=True) == first
        assert await acl.admin.xlen("worker:w1:output") == 5

        # Everything else: NOPERM, through the bus and as raw commands.
        for stream in (COMMANDS_STREAM, "worker:w2:input", "worker:w2:output"):
            with pytest.raises(CodeyardError, match="no permissions"):
                await bus.read(stream)
            with pytest.raises(CodeyardError, match="no permissions"):
                await bus.publish(stream, {"x": "1"})
        with pytest.raises(CodeyardError, match="no permissions"):
            await bus.publish_many("worker:w2:output", [{"event": "forged"}])
        with pytest.raises(CodeyardError, match="no permissions"):
            await bus.publish_many("worker:w2:output", [{"event": "forged"}], idempotent=True)
        with pytest.raises(CodeyardError, match="no permissions"):
            await bus.read("worker:standby:pool-2")
        # XDEL is a worker command, but not on another worker's input: its prompts stay.
        (others,) = await RedisEventBus(acl.admin).read("worker:w2:input")
        with pytest.raises(CodeyardError, match="no permissions"):
            await bus.delete_entries("worker:w2:input", [others.id])
        denied = [
            ("KEYS", "*"),
            ("SCAN", "0"),
            ("ACL", "WHOAMI"),
            ("ACL", "SETUSER", login.username, "~*"),
            ("CONFIG", "GET", "requirepass"),
            ("FLUSHALL",),
            ("FLUSHDB",),
            ("SUBSCRIBE", "anything"),
            ("PUBLISH", "anything", "x"),
            ("EVAL", "return 1", "0"),
            ("INFO",),
            ("CLIENT", "LIST"),
            ("XLEN", "worker:standby:pool-2"),
            ("XRANGE", "worker:w1:input", "-", "+"),  # not a worker command, even on own keys
            ("XREVRANGE", "worker:w2:output", "+", "-", "COUNT", "1"),  # own keys only
            ("XDEL", "worker:w2:input", others.id),
            ("XDEL", COMMANDS_STREAM, "0-1"),
        ]
        for command in denied:
            with pytest.raises(rexc.NoPermissionError):
                await cast(Any, raw).execute_command(*command)
        # A script the worker loads itself cannot reach past the key list either.
        script = raw.register_script("return redis.call('XLEN', 'worker:w2:input')")
        with pytest.raises(rexc.ResponseError, match="can't access"):
            await script(keys=["worker:w1:output"])
        assert await acl.admin.xlen("worker:w2:input") == 1
        assert await acl.admin.xlen(COMMANDS_STREAM) == 1
    finally:
        await bus.aclose()
        await raw.aclose()


async def connections(admin: aioredis.Redis, username: str) -> list[str]:
    return [c["id"] for c in await admin.client_list() if c.get("user") == username]


async def test_bind_reaches_a_standby_already_logged_in_and_revoke_cuts_it_off(acl: Acl) -> None:
    login = await acl.creds.issue("pool-1")
    standby = aioredis.Redis.from_url(acl.login_url(login), decode_responses=True)
    try:
        assert await standby.xlen("worker:standby:pool-1") == 0  # connected, waiting
        with pytest.raises(rexc.NoPermissionError):
            await standby.xlen("worker:w9:input")
        before = await connections(acl.admin, login.username)
        assert len(before) == 1
        await acl.creds.bind("pool-1", "w9")
        assert await standby.xadd("worker:w9:output", {"event": "ready"})
        assert await connections(acl.admin, login.username) == before  # no new login
        await acl.creds.revoke("pool-1")
        # DELUSER closed its connection (the next command finds it closed), and the
        # reconnect's login fails.
        with pytest.raises(rexc.ConnectionError):
            await standby.ping()
        assert await connections(acl.admin, login.username) == []
        with pytest.raises(rexc.AuthenticationError):
            await standby.ping()
    finally:
        await standby.aclose()


async def test_check_fails_with_a_typed_error_when_the_manager_may_not_run_acl(acl: Acl) -> None:
    await acl.creds.check()  # the default user may
    name = "restricted-" + uuid.uuid4().hex[:8]
    await cast(Any, acl.admin).execute_command(
        "ACL", "SETUSER", name, "on", ">pw", "~*", "+@all", "-acl"
    )
    client = aioredis.Redis.from_url(acl.url.replace("redis://", f"redis://{name}:pw@", 1))
    try:
        creds = RedisAclWorkerCredentials(client, owner="restricted")
        with pytest.raises(WorkerAclUnavailable, match="WORKER_REDIS_ACL=false") as info:
            await creds.check()
        assert info.value.to_dict()["retryable"] is False
    finally:
        await client.aclose()
        await cast(Any, acl.admin).execute_command("ACL", "DELUSER", name)


class BindPausingAfterLookup(RedisAclWorkerCredentials):
    """``bind`` stops between its user lookup and its ``SETUSER`` until ``go_on`` (or
    0.5 s: with bind and revoke ordered, the revoke cannot set it from inside)."""

    def __init__(self, client: aioredis.Redis, *, owner: str) -> None:
        super().__init__(client, owner=owner)
        self.looked_up = anyio.Event()
        self.go_on = anyio.Event()

    async def _user(self, slot: str) -> dict[str, Any]:
        info = await super()._user(slot)
        self.looked_up.set()
        with anyio.move_on_after(0.5):
            await self.go_on.wait()
        return info


async def test_a_revoke_landing_inside_a_bind_leaves_no_user_behind(acl: Acl) -> None:
    creds = BindPausingAfterLookup(acl.admin, owner="acl-" + uuid.uuid4().hex[:8])
    await creds.issue("pool-1")

    async def revoke() -> None:
        await creds.revoke("pool-1")
        creds.go_on.set()

    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(creds.bind, "pool-1", "w1")
                await creds.looked_up.wait()  # the bind is between its two commands
                tg.start_soon(revoke)
        # Unordered, the bind's SETUSER came after the DELUSER and made the user again
        # (no password: useless, but a leak until the next reconcile pass).
        assert await creds.slots() == ()
        assert await acl.admin.acl_getuser(creds.username("pool-1")) is None
    finally:
        for slot in await creds.slots():
            await creds.revoke(slot)


async def test_a_restored_login_has_the_same_password_and_limits(acl: Acl) -> None:
    login = await acl.creds.issue("pool-1")
    await acl.creds.bind("pool-1", "w1")
    worker = aioredis.Redis.from_url(acl.login_url(login), decode_responses=True)
    try:
        assert await worker.xadd("worker:w1:output", {"event": "ready"})
        # What a Redis restart does to the user (DELUSER also drops the connection).
        await acl.admin.acl_deluser(login.username)
        with pytest.raises(rexc.ConnectionError):
            await worker.ping()
        with pytest.raises(rexc.AuthenticationError):
            await worker.ping()
        assert await acl.creds.restore() == ("pool-1",)
        stored = await acl.admin.acl_getuser(login.username)
        assert stored is not None
        # Redis holds the digest it was given, which is what the manager remembered.
        digest = hashlib.sha256(login.password.get_secret_value().encode()).hexdigest()
        assert stored["passwords"] == [digest]
        assert await worker.xadd("worker:w1:output", {"event": "back"})
        assert await worker.xlen("worker:standby:pool-1") == 0
        for command in (("XLEN", "worker:w2:input"), ("ACL", "WHOAMI"), ("KEYS", "*")):
            with pytest.raises(rexc.NoPermissionError):
                await cast(Any, worker).execute_command(*command)
        assert await acl.admin.xlen("worker:w1:output") == 2
    finally:
        await worker.aclose()
