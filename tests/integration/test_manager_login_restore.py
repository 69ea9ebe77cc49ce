"""A serving manager (run_manager, local-process runtime, real Redis, the real Claude CLI)
makes a worker's lost Redis login again: the user is deleted behind its back, as a Redis
restart would (which also drops its connections), and the worker, retrying its login,
answers the next prompt. A real redis-server restart: tests/faults/test_worker_login_restore.py."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from codeyard.adapters.redis.worker_acl import RedisAclWorkerCredentials
from codeyard.domain.agent import ResultStatus
from codeyard.domain.worker import WorkerSpec
from codeyard.testing.model_server import ModelServer, Scenario, Text
from tests.integration.manager_local_support import local_config, local_manager, until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_a_serving_manager_restores_a_lost_worker_login(
    redis_db: str, tmp_path: Path
) -> None:
    owner = "restore-m-" + uuid.uuid4().hex[:6]
    admin = aioredis.Redis.from_url(redis_db, decode_responses=True)
    logins = RedisAclWorkerCredentials(admin, owner=owner)
    try:
        async with ModelServer(Scenario(turns=[[Text("one")], [Text("two")]])) as server:
            config = local_config(redis_db, server, owner, worker_redis_acl=True)
            async with local_manager(
                redis_db, config, tmp_path=tmp_path, worker_logins=logins
            ) as m:
                made = await m.client.create(WorkerSpec(), prompt="hi", request_id="r1")
                first = await m.client.wait_result(made.worker_id, request_id="r1", timeout_s=60)
                user = logins.username(made.worker_id)
                assert await admin.acl_deluser(user) == 1

                async def restored() -> bool:
                    return await admin.acl_getuser(user) is not None

                await until(restored, 10)
                await m.client.send(made.worker_id, "again", request_id="r2")
                second = await m.client.wait_result(made.worker_id, request_id="r2", timeout_s=60)
                counted = m.manager.metrics.registry.get_sample_value(
                    "codeyard_worker_logins_restored_total"
                )
                keys = await logins.keys(made.worker_id)
    finally:
        await admin.aclose()
    assert first.status is ResultStatus.SUCCESS, first
    assert (second.status, second.text) == (ResultStatus.SUCCESS, "two"), second
    assert counted == 1.0
    assert keys == tuple(
        sorted(
            (
                f"worker:standby:{made.worker_id}",
                f"worker:{made.worker_id}:input",
                f"worker:{made.worker_id}:output",
            )
        )
    )
