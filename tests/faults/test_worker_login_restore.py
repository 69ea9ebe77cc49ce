"""A per-worker Redis login survives a Redis restart: ``codeyard worker`` as a subprocess
(the REAL Claude Code CLI, the scripted model server) logged in as its own ACL user, on a
private durable Redis (AOF) that is SIGKILLed and started again on the same port. AOF
does not keep ACL users; the manager's login-restore loop
(:mod:`codeyard.app.manager.login_restore`, on the manager's interval) makes the login
again with the same password and keys, and the worker, retrying its login meanwhile,
answers a prompt. Without the loop (control) the same worker exits 3 at its bound.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import anyio
import pytest
import redis.asyncio as aioredis

from codeyard.adapters.redis.worker_acl import RedisAclWorkerCredentials
from codeyard.app.manager.config import ManagerConfig
from codeyard.app.manager.login_restore import restore_logins_loop
from codeyard.app.observability.metrics import ManagerMetrics
from codeyard.domain.worker_access import WorkerLogin
from codeyard.testing.model_server import ModelServer, Scenario
from tests import services
from tests.faults.test_worker_redis_outage import (
    WORKER,
    check_run_once,
    crash_restart,
    first_entry_after,
    worker,
)

pytestmark = [pytest.mark.anyio, pytest.mark.faults, pytest.mark.redis, pytest.mark.slow]


def login_url(redis: services.RedisServer, login: WorkerLogin) -> str:
    user, password = quote(login.username, safe=""), login.password.get_secret_value()
    return redis.url.replace("redis://", f"redis://{user}:{password}@", 1)


@pytest.fixture
async def logins(durable_redis: services.RedisServer) -> AsyncIterator[RedisAclWorkerCredentials]:
    """The manager's credentials, on a client built like the manager's (no retries)."""
    client = aioredis.Redis.from_url(durable_redis.url, decode_responses=True)
    try:
        yield RedisAclWorkerCredentials(client, owner="restore-" + uuid.uuid4().hex[:6])
    finally:
        await client.aclose()


# Down shorter than the loop's interval (no failed pass before Redis is back: the first
# command finds the pooled connection dead) and longer (passes fail during the outage).
@pytest.mark.parametrize("down_s", [0.5, 3.0])
async def test_a_worker_logged_in_as_itself_answers_after_a_redis_restart(
    durable_redis: services.RedisServer,
    logins: RedisAclWorkerCredentials,
    tmp_path: Path,
    down_s: float,
) -> None:
    interval_s = ManagerConfig(owner="restore").watch_interval_s
    metrics = ManagerMetrics()
    login = await logins.issue(WORKER)
    await logins.bind(WORKER, WORKER)
    admin = aioredis.Redis.from_url(durable_redis.url, decode_responses=True)
    try:
        async with (
            ModelServer(Scenario.text("pong")) as server,
            worker(
                durable_redis, server, tmp_path, CODEYARD_REDIS_URL=login_url(durable_redis, login)
            ) as w,
            anyio.create_task_group() as tg,
        ):  # fmt: skip
            tg.start_soon(
                functools.partial(
                    restore_logins_loop, logins, interval_s=interval_s, metrics=metrics
                )
            )
            await anyio.sleep(0.1)  # the loop's first pass found the login there
            back = await crash_restart(durable_redis, w, down_s=down_s)
            with anyio.fail_after(30):
                while not await admin.acl_getuser(login.username):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            restored = time.time()
            await w.send({"prompt": "ping", "request_id": "r1"})
            entries = await w.wait_for_result("r1")
            assert w.process.returncode is None
            tg.cancel_scope.cancel()
    finally:
        await admin.aclose()
    check_run_once(entries, "r1")
    assert metrics.registry.get_sample_value("codeyard_worker_logins_restored_total") == 1.0
    assert await logins.keys(WORKER) == (
        f"worker:standby:{WORKER}",
        f"worker:{WORKER}:input",
        f"worker:{WORKER}:output",
    )
    print(
        f"down {down_s} s: login restored {restored - back:.2f} s after Redis was back "
        f"(interval {interval_s} s); worker's first event "
        f"{first_entry_after(entries, back):.2f} s after"
    )


async def test_without_the_restore_loop_the_worker_exits_at_its_bound(
    durable_redis: services.RedisServer, logins: RedisAclWorkerCredentials, tmp_path: Path
) -> None:
    """The control: the login really is gone after the restart, and nothing else brings
    it back."""
    login = await logins.issue(WORKER)
    await logins.bind(WORKER, WORKER)
    env = {"CODEYARD_REDIS_URL": login_url(durable_redis, login)}
    async with (
        ModelServer(Scenario.text("unused")) as server,
        worker(durable_redis, server, tmp_path, CODEYARD_WORKER_REDIS_OUTAGE_S="4", **env) as w,
    ):
        await crash_restart(durable_redis, w, down_s=0.5)
        with anyio.fail_after(30):
            code = await w.process.wait()
        logs = w.logs()
    assert code == 3, logs
    fresh = aioredis.Redis.from_url(durable_redis.url)  # the fixture's connection is stale
    try:
        assert await fresh.acl_getuser(login.username) is None
    finally:
        await fresh.aclose()
    assert "worker: giving up, redis unreachable" in logs
