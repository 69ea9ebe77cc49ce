"""Warm-pool standbys that die in the pool, through the real manager (local-process
runtime, real Redis with per-worker ACL logins, the real Claude CLI): a killed standby is
replaced by the watcher's sweep and its login revoked; a create that claims one before any
sweep saw it still gets a live worker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from codeyard.adapters.redis.worker_acl import RedisAclWorkerCredentials
from codeyard.app.manager.launch import LABEL_ROLE, ROLE_STANDBY
from codeyard.domain.agent import ResultStatus
from codeyard.domain.container import LABEL_OWNER, LABEL_WORKER, ContainerInfo
from codeyard.domain.worker import WorkerSpec
from codeyard.testing.model_server import ModelServer, Scenario
from tests.integration.manager_local_support import LocalManager, local_config, local_manager, until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
async def admin(redis_db: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_db, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def standbys(m: LocalManager) -> list[ContainerInfo]:
    owner = m.manager.config.owner
    return await m.runtime.list({LABEL_OWNER: owner, LABEL_ROLE: ROLE_STANDBY})


def replaced(m: LocalManager, found: str) -> float:
    value = m.manager.metrics.registry.get_sample_value(
        "codeyard_warm_pool_standbys_replaced_total", {"found": found}
    )
    return value or 0.0


async def test_a_killed_standby_is_replaced_and_loses_its_login(
    redis_db: str, admin: aioredis.Redis, tmp_path: Path
) -> None:
    owner = "pool-h-" + uuid.uuid4().hex[:6]
    logins = RedisAclWorkerCredentials(admin, owner=owner)
    async with ModelServer(Scenario.text("warm answer")) as server:
        config = local_config(
            redis_db, server, owner, warm_pool_size=1, warm_pool_templates=(WorkerSpec(),),
            worker_redis_acl=True,
        )  # fmt: skip
        async with local_manager(redis_db, config, tmp_path=tmp_path, worker_logins=logins) as m:
            await until(lambda: m.manager.pool.size() == 1, 20)
            (dead,) = await standbys(m)
            dead_slot = dead.labels[LABEL_WORKER]
            assert await logins.slots() == (dead_slot,)
            await m.runtime.stop(dead.id, timeout_s=0)  # SIGKILL, like an OOM kill

            async def replaced_in_pool() -> bool:
                ids = [c.id for c in await standbys(m)]
                return m.manager.pool.size() == 1 and dead.id not in ids and len(ids) == 1

            await until(replaced_in_pool, 20)
            (fresh,) = await standbys(m)
            slots_after = await logins.slots()
            created = await m.client.create(WorkerSpec(), prompt="hi", request_id="r-warm")
            result = await m.client.wait_result(
                created.worker_id, request_id="r-warm", timeout_s=60
            )
            claimed = (await m.client.status(created.worker_id)).container_id
            sweeps = replaced(m, "sweep")
    assert slots_after == (fresh.labels[LABEL_WORKER],)
    assert dead_slot not in slots_after
    assert sweeps == 1
    assert created.warm
    assert claimed == fresh.id
    assert result.status is ResultStatus.SUCCESS, result
    assert result.text == "warm answer"


async def test_a_create_that_claims_a_dead_standby_still_gets_a_live_worker(
    redis_db: str, admin: aioredis.Redis, tmp_path: Path
) -> None:
    owner = "pool-c-" + uuid.uuid4().hex[:6]
    logins = RedisAclWorkerCredentials(admin, owner=owner)
    async with ModelServer(Scenario.text("live answer")) as server:
        # No sweeps (watch_interval_s): only the claims can find the dead standby.
        config = local_config(
            redis_db, server, owner, warm_pool_size=2, warm_pool_templates=(WorkerSpec(),),
            worker_redis_acl=True, watch_interval_s=3600,
        )  # fmt: skip
        async with local_manager(redis_db, config, tmp_path=tmp_path, worker_logins=logins) as m:
            await until(lambda: m.manager.pool.size() == 2, 30)
            dead = (await standbys(m))[0]
            dead_slot = dead.labels[LABEL_WORKER]
            await m.runtime.stop(dead.id, timeout_s=0)
            # The pool hands its two standbys out in order (refills go after them), so one
            # of these two claims takes the dead one and falls back.
            first = await m.client.create(WorkerSpec(), prompt="hi", request_id="r-1")
            second = await m.client.create(WorkerSpec(), prompt="hi", request_id="r-2")
            results = [
                await m.client.wait_result(w.worker_id, request_id=r, timeout_s=60)
                for w, r in ((first, "r-1"), (second, "r-2"))
            ]
            claimed = [(await m.client.status(w.worker_id)).container_id for w in (first, second)]
            await until(lambda: m.manager.pool.size() == 2, 30)  # refilled
            slots_after = await logins.slots()
            gone = dead.id not in [c.id for c in await m.runtime.list()]
            claims = replaced(m, "claim")
    assert first.warm  # a live standby: the other one, or the dead one's fallback
    assert [r.text for r in results] == ["live answer", "live answer"], results
    assert all(r.status is ResultStatus.SUCCESS for r in results), results
    assert dead.id not in claimed
    assert claims == 1
    assert gone
    assert dead_slot not in slots_after
