"""Issue #9 "Isolation" through the real manager (local-process runtime, real Redis, the
real Claude CLI): with ``worker_redis_acl`` every worker process logs in as its own ACL
user, never with the manager's password, still completes a prompt (warm claim and cold
create), cannot touch the command stream or another worker's streams, and loses its
login when deleted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
import redis.exceptions as rexc

from codeyard.adapters.redis.worker_acl import RedisAclWorkerCredentials
from codeyard.domain.agent import ResultStatus
from codeyard.domain.container import LABEL_OWNER, LABEL_WORKER
from codeyard.domain.streams import COMMANDS_STREAM
from codeyard.domain.worker import WorkerSpec, WorkerStatus
from codeyard.domain.worker_access import WorkerAclUnavailable
from codeyard.testing.model_server import ModelServer, Scenario, Text
from tests.integration.manager_local_support import (
    local_config,
    local_manager,
    until,
    wait_status,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]
MANAGER_PASSWORD = "manager-" + uuid.uuid4().hex


@pytest.fixture
async def manager_url(redis_db: str) -> AsyncIterator[str]:
    """``redis_db`` as a password-protected manager user (an admin with every right)."""
    name = "mgr-" + uuid.uuid4().hex[:8]
    admin = aioredis.Redis.from_url(redis_db)
    rules = ("on", f">{MANAGER_PASSWORD}", "~*", "&*", "+@all")
    await cast(Any, admin).execute_command("ACL", "SETUSER", name, *rules)
    try:
        yield redis_db.replace("redis://", f"redis://{name}:{MANAGER_PASSWORD}@", 1)
    finally:
        await cast(Any, admin).execute_command("ACL", "DELUSER", name)
        await admin.aclose()


def process_env(slot: str) -> dict[str, str]:
    """The environment of the ``codeyard-worker --standby SLOT`` process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if slot.encode() not in argv or not any(a.endswith(b"codeyard-worker") for a in argv):
                continue
            raw = (entry / "environ").read_bytes()
        except OSError:
            continue
        return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    raise AssertionError(f"no worker process for slot {slot}")


async def test_workers_log_in_as_their_own_acl_user_and_reach_only_their_streams(
    redis_db: str, manager_url: str, tmp_path: Path
) -> None:
    owner = "acl-m-" + uuid.uuid4().hex[:6]
    scenario = Scenario(turns=[[Text("warm answer")], [Text("cold answer")]])
    admin = aioredis.Redis.from_url(manager_url, decode_responses=True)
    logins = RedisAclWorkerCredentials(admin, owner=owner)
    try:
        async with ModelServer(scenario) as server:
            config = local_config(
                redis_db, server, owner, warm_pool_size=1, warm_pool_templates=(WorkerSpec(),),
                worker_redis_acl=True,
            )  # fmt: skip
            async with local_manager(
                manager_url, config, tmp_path=tmp_path, worker_logins=logins
            ) as m:
                await until(lambda: m.manager.pool.size() == 1, 20)
                warm = await m.client.create(WorkerSpec(), prompt="hi", request_id="r-warm")
                warm_result = await m.client.wait_result(
                    warm.worker_id, request_id="r-warm", timeout_s=60
                )
                # Another container shape: not the pool's template, so a cold create.
                cold = await m.client.create(
                    WorkerSpec(labels={"kind": "cold"}), prompt="hi", request_id="r-cold"
                )
                cold_result = await m.client.wait_result(
                    cold.worker_id, request_id="r-cold", timeout_s=60
                )
                slots = {
                    c.labels[LABEL_WORKER]: c
                    for c in await m.runtime.list({LABEL_OWNER: owner})
                    if c.labels.get(LABEL_WORKER)
                }
                envs = {slot: process_env(slot) for slot in slots}
                await check_isolation(envs[cold.worker_id]["CODEYARD_REDIS_URL"], cold.worker_id,
                                      warm.worker_id)  # fmt: skip
                claimed = (await m.client.status(warm.worker_id)).container_id
                claimed_slot = next(s for s, c in slots.items() if c.id == claimed)
                before_delete = await logins.slots()
                await m.client.delete(warm.worker_id)
                after_delete = await logins.slots()
                status = await m.client.status(cold.worker_id)
    finally:
        await admin.aclose()
    assert warm.warm
    assert not cold.warm
    assert warm_result.status is ResultStatus.SUCCESS, warm_result
    assert cold_result.status is ResultStatus.SUCCESS, cold_result
    assert status.status is WorkerStatus.RUNNING
    assert len(envs) == 3  # the claimed standby, the cold worker, the refilled standby
    for slot, env in envs.items():
        url = env["CODEYARD_REDIS_URL"]
        assert MANAGER_PASSWORD not in str(env), slot
        assert f"codeyard-worker%3A{owner}%3A{slot}:" in url, slot
    assert cold.worker_id in before_delete
    assert sorted(before_delete) == sorted(envs)
    # The claimed standby's login went with its worker; the refilled standby keeps its own.
    assert sorted(after_delete) == sorted(s for s in envs if s != claimed_slot)


async def check_isolation(url: str, own: str, other: str) -> None:
    """What the cold worker's own login may and may not do."""
    worker = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        assert await worker.xlen(f"worker:{own}:output") > 0
        for key in (COMMANDS_STREAM, f"worker:{other}:input", f"worker:{other}:output"):
            with pytest.raises(rexc.NoPermissionError):
                await worker.xlen(key)
        with pytest.raises(rexc.NoPermissionError):
            await worker.xadd(COMMANDS_STREAM, {"command": "{}"})
        with pytest.raises(rexc.NoPermissionError):
            await cast(Any, worker).execute_command("KEYS", "*")
    finally:
        await worker.aclose()


async def test_a_manager_whose_redis_user_may_not_run_acl_fails_at_start(
    redis_db: str, tmp_path: Path
) -> None:
    name = "no-acl-" + uuid.uuid4().hex[:8]
    admin = aioredis.Redis.from_url(redis_db)
    rules = ("on", ">pw", "~*", "&*", "+@all", "-@admin")  # like a managed Redis: no ACL
    await cast(Any, admin).execute_command("ACL", "SETUSER", name, *rules)
    url = redis_db.replace("redis://", f"redis://{name}:pw@", 1)
    client = aioredis.Redis.from_url(url, decode_responses=True)
    logins = RedisAclWorkerCredentials(client, owner="no-acl")
    try:
        async with ModelServer(Scenario.text("unused")) as server:
            config = local_config(redis_db, server, "no-acl", worker_redis_acl=True)
            with pytest.RaisesGroup(
                pytest.RaisesExc(WorkerAclUnavailable, match="WORKER_REDIS_ACL=false"),
                flatten_subgroups=True,
            ):
                async with local_manager(url, config, tmp_path=tmp_path, worker_logins=logins):
                    pytest.fail("the manager served without being able to make worker logins")
    finally:
        await client.aclose()
        await cast(Any, admin).execute_command("ACL", "DELUSER", name)
        await admin.aclose()


async def test_a_dead_workers_login_goes_when_the_watcher_sees_it_die(
    redis_db: str, manager_url: str, tmp_path: Path
) -> None:
    owner = "acl-d-" + uuid.uuid4().hex[:6]
    admin = aioredis.Redis.from_url(manager_url, decode_responses=True)
    logins = RedisAclWorkerCredentials(admin, owner=owner)
    dead: dict[str, tuple[str, str]] = {}  # worker id -> (slot, the worker's Redis URL)
    try:
        async with ModelServer(Scenario.text("unused")) as server:
            # reconcile_interval_s is 3600 here: only the watcher can revoke in time.
            config = local_config(
                redis_db, server, owner, warm_pool_size=1, warm_pool_templates=(WorkerSpec(),),
                worker_redis_acl=True,
            )  # fmt: skip
            async with local_manager(
                manager_url, config, tmp_path=tmp_path, worker_logins=logins
            ) as m:
                await until(lambda: m.manager.pool.size() == 1, 20)
                warm = await m.client.create(WorkerSpec(), request_id="r-warm")
                cold = await m.client.create(WorkerSpec(labels={"kind": "cold"}), request_id="r-c")
                slots = {
                    c.id: c.labels[LABEL_WORKER] for c in await m.runtime.list({LABEL_OWNER: owner})
                }
                for worker in (warm, cold):
                    await wait_status(m.client, worker.worker_id, "running", 30)
                    container_id = (await m.client.status(worker.worker_id)).container_id
                    assert container_id is not None
                    slot = slots[container_id]
                    dead[worker.worker_id] = (slot, process_env(slot)["CODEYARD_REDIS_URL"])
                    await m.runtime.stop(container_id, timeout_s=0)

                async def revoked() -> bool:
                    left = await logins.slots()
                    return all(slot not in left for slot, _ in dead.values())

                await until(revoked, 10)
                statuses = [(await m.client.status(w)).status for w in dead]
    finally:
        await admin.aclose()
    assert warm.warm
    assert not cold.warm
    assert all(status.is_terminal for status in statuses), statuses
    for slot, url in dead.values():
        former = aioredis.Redis.from_url(url)
        try:
            with pytest.raises(rexc.AuthenticationError):
                await former.ping()
        finally:
            await former.aclose()
        assert slot.startswith("pool-") or slot in dead
