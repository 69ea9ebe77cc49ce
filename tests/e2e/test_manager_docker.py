"""Issue #5 acceptance on the real thing: ``codeyard serve`` (a subprocess) on Docker, Redis
and Postgres; workers are containers of the real worker image running the real Claude Code
CLI against the scripted model server."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
import docker
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.client import CodeyardClient
from codeyard.domain.agent import ResultStatus
from codeyard.domain.commands import (
    COMMAND_FIELD,
    CreateWorker,
    ListWorkers,
    Reply,
    command_fields,
)
from codeyard.domain.events import ResultPayload
from codeyard.domain.streams import COMMANDS_STREAM, DEAD_LETTER_STREAM, response_stream
from codeyard.domain.worker import WorkerSpec, WorkerStatus
from codeyard.testing.model_server import ModelServer, Scenario, Text
from tests.contract.test_command_service import Garbage, garbage
from tests.e2e.serve_support import (
    API_KEY,
    Serve,
    owned_containers,
    remove_owned,
    serve_env,
    serving,
)
from tests.integration.manager_support import claude_worker_image  # noqa: F401 - fixture
from tests.services.worker_redis import WorkerRedis

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.usefixtures("claude_worker_image"),
]


@pytest.fixture
async def server() -> AsyncIterator[ModelServer]:
    scenario = Scenario(turns=[[Text("Done: the worker answered.")]])
    async with ModelServer(scenario, host="0.0.0.0") as model:
        yield model


@dataclass
class Stack:
    """One manager's world: its owner id, environment, Redis, engine, a log folder."""

    owner: str
    env: dict[str, str]
    redis_url: str
    docker: docker.DockerClient
    logs: Path


@pytest.fixture
def stack(
    worker_redis_db: WorkerRedis,
    postgres_db: str,
    server: ModelServer,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> Iterator[Stack]:
    owner = "e2e-" + uuid.uuid4().hex[:8]
    env = serve_env(
        owner=owner, redis_url=worker_redis_db.url, postgres_dsn=postgres_db, server=server
    )
    yield Stack(owner, env, worker_redis_db.url, docker_client, tmp_path)
    remove_owned(docker_client, owner)


async def _wait(check: Callable[[], Awaitable[bool]], deadline_s: float) -> None:
    """Poll state owned by other processes (the service, Docker) until ``check`` holds."""
    with anyio.fail_after(deadline_s):
        while not await check():  # noqa: ASYNC110 - no event to wait on across processes
            await anyio.sleep(0.1)


async def test_create_runs_claude_in_a_container_then_delete_removes_it(stack: Stack) -> None:
    docker_client = stack.docker
    async with (
        serving(stack.env, stack.logs / "serve.log"),
        CodeyardClient.connect(stack.redis_url) as client,
    ):
        spec = WorkerSpec(instructions="Answer in one line.")
        created = await client.create(spec, prompt="do the task", request_id="e2e-1")
        wid = created.worker_id
        result = await client.wait_result(wid, request_id="e2e-1", timeout_s=120)
        running = await client.status(wid)
        events = []
        with anyio.move_on_after(3):
            async for item in client.events(wid, block_s=0.2):
                events.append(item.event)
                if isinstance(item.event.payload, ResultPayload):
                    break
        assert running.container_id is not None
        container = docker_client.containers.get(running.container_id)
        inspected = container.attrs
        # A second worker whose container dies under it.
        doomed = await client.create(WorkerSpec(), request_id="e2e-2")
        await _wait(lambda: _is(client, doomed.worker_id, WorkerStatus.RUNNING), 60)
        victim = (await client.status(doomed.worker_id)).container_id
        assert victim is not None
        docker_client.containers.get(victim).kill()
        death = await client.wait_result(doomed.worker_id, timeout_s=60)
        await _wait(lambda: _is(client, doomed.worker_id, WorkerStatus.FAILED), 30)
        failed = await client.status(doomed.worker_id)
        logs = await client.logs(wid)
        deleted = await client.delete(wid)
        stopped = await client.status(wid)
        left = owned_containers(docker_client, stack.owner)
        logins_left = await _worker_logins(stack)
    assert created.status is WorkerStatus.STARTING
    assert running.status is WorkerStatus.RUNNING
    assert result.status is ResultStatus.SUCCESS, result
    assert result.text == "Done: the worker answered."
    run = [e for e in events if e.run_id == "e2e-1"]
    assert [e.seq for e in run] == list(range(len(run)))
    assert API_KEY not in json.dumps([e.model_dump(mode="json") for e in events])
    assert inspected["Config"]["User"] == "1000:1000"
    assert inspected["HostConfig"]["CapDrop"] == ["ALL"]
    _assert_own_redis_login(stack, wid, inspected, logins_left)
    assert death.status is ResultStatus.ERROR
    assert death.terminal_reason == "container_killed"
    assert (failed.status, failed.error) == (WorkerStatus.FAILED, "container_killed")
    assert isinstance(logs, str)
    assert deleted.status is WorkerStatus.STOPPED
    assert stopped.status is WorkerStatus.STOPPED
    assert left == []  # the deleted and the dead worker's containers are both gone


def _assert_own_redis_login(
    stack: Stack, worker_id: str, inspected: dict[str, Any], logins_left: list[str]
) -> None:
    """Issue #9: the worker logs in to Redis as its own ACL user, never as the manager."""
    manager_password = urlsplit(stack.redis_url).password
    assert manager_password
    assert manager_password not in json.dumps(inspected)
    worker_env = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
    login = f"redis://codeyard-worker%3A{stack.owner}%3A{worker_id}:"
    assert worker_env["CODEYARD_REDIS_URL"].startswith(login)
    assert f"codeyard-worker:{stack.owner}:{worker_id}" not in logins_left  # revoked on delete


async def _worker_logins(stack: Stack) -> list[str]:
    admin = aioredis.Redis.from_url(stack.redis_url, decode_responses=True)
    try:
        return [str(u) for u in await admin.acl_users()]
    finally:
        await admin.aclose()


async def _is(client: CodeyardClient, worker_id: str, status: WorkerStatus) -> bool:
    return (await client.status(worker_id)).status is status


async def _replies(bus: RedisEventBus, request_id: str) -> list[Reply]:
    entries = await bus.read(response_stream(request_id), count=100)
    return [Reply.from_fields(e.fields) for e in entries]


async def test_kill_9_mid_flight_then_restart_handles_each_command_once_and_adopts(
    stack: Stack,
) -> None:
    env = {**stack.env, "CODEYARD_MANAGER__TAKEOVER_S": "2"}
    docker_client, owner, tmp_path = stack.docker, stack.owner, stack.logs
    bus = RedisEventBus.from_url(stack.redis_url)
    client = CodeyardClient(bus)
    burst = [f"burst-{i}" for i in range(4)]
    try:
        async with serving(env, tmp_path / "serve-1.log") as first:
            early = await client.create(WorkerSpec(), prompt="first", request_id="early")
            await client.wait_result(early.worker_id, request_id="early", timeout_s=120)
            for request_id in burst:
                command = CreateWorker(request_id=request_id, spec=WorkerSpec(), prompt="go")
                await bus.publish(COMMANDS_STREAM, command_fields(command))
            await _wait(lambda: _created_any(bus, burst), 60)  # mid-flight...
            first.kill9()  # ...and gone without a goodbye
            await first.process.wait()
        # While no manager runs: one more create arrives, and another is read by a manager
        # that dies before answering (pending on a consumer that never comes back).
        late = ["late-0", "late-1"]
        for request_id in late:
            command = CreateWorker(request_id=request_id, spec=WorkerSpec(), prompt="go")
            await bus.publish(COMMANDS_STREAM, command_fields(command))
        taken = await bus.read_group(COMMANDS_STREAM, "codeyard-managers", "ghost", count=1)
        assert len(taken) == 1
        burst += late
        async with serving(env, tmp_path / "serve-2.log"):
            await _wait(lambda: _all_replied(bus, burst), 120)
            replies = {rid: await _replies(bus, rid) for rid in burst}
            worker_ids = [str(r[0].result["worker_id"]) for r in replies.values()]  # type: ignore[index,call-overload]
            results = [
                await client.wait_result(w, request_id=rid, timeout_s=120)
                for w, rid in zip(worker_ids, burst, strict=True)
            ]
            # The worker of the first run was adopted: it still answers and is watched.
            await client.send(early.worker_id, "again", request_id="again")
            again = await client.wait_result(early.worker_id, request_id="again", timeout_s=120)
            active = await client.list()
            containers = set(owned_containers(docker_client, owner))
            for worker in active:
                await client.delete(worker.worker_id)
            await _wait(lambda: _none_left(docker_client, owner), 30)
    finally:
        await bus.aclose()
    assert all(len(r) == 1 and r[0].ok for r in replies.values()), replies
    assert len(set(worker_ids)) == len(burst)
    assert all(r.status is ResultStatus.SUCCESS for r in results), results
    assert again.status is ResultStatus.SUCCESS
    assert {w.worker_id for w in active} == {early.worker_id, *worker_ids}
    assert containers == {w.container_id for w in active}  # no orphans, none missing


async def _created_any(bus: RedisEventBus, request_ids: Sequence[str]) -> bool:
    return any([await _replies(bus, rid) for rid in request_ids])


async def _all_replied(bus: RedisEventBus, request_ids: Sequence[str]) -> bool:
    return all([await _replies(bus, rid) for rid in request_ids])


async def _none_left(client: docker.DockerClient, owner: str) -> bool:
    await anyio.lowlevel.checkpoint()
    return not owned_containers(client, owner)


@pytest.fixture
async def garbage_service(stack: Stack) -> AsyncIterator[tuple[Serve, RedisEventBus]]:
    bus = RedisEventBus.from_url(stack.redis_url)
    async with serving(stack.env, stack.logs / "serve.log") as service:
        yield service, bus
    await bus.aclose()


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(entries=st.lists(garbage, min_size=50, max_size=50))
async def test_1000_garbage_commands_get_error_replies_and_the_service_stays_up(
    garbage_service: tuple[Serve, RedisEventBus], entries: list[Garbage]
) -> None:
    service, bus = garbage_service
    answerable: list[str] = []
    dead: list[str] = []
    for item in entries:
        if item.doc is not None:
            request_id = uuid.uuid4().hex
            answerable.append(request_id)
            doc = json.dumps(item.doc | {"request_id": request_id})
            await bus.publish(COMMANDS_STREAM, {COMMAND_FIELD: doc})
        else:
            assert item.fields is not None
            dead.append(await bus.publish(COMMANDS_STREAM, item.fields))
    probe = ListWorkers(request_id=uuid.uuid4().hex)
    await bus.publish(COMMANDS_STREAM, command_fields(probe))
    await _wait(lambda: _all_replied(bus, [*answerable, probe.request_id]), 60)
    for request_id in answerable:
        (reply,) = await _replies(bus, request_id)
        assert (reply.ok, reply.error_code) == (False, "invalid_command")
    (answer,) = await _replies(bus, probe.request_id)
    assert answer.ok
    letters = {e.fields["id"] for e in await bus.read(DEAD_LETTER_STREAM, count=100_000)}
    assert set(dead) <= letters
    assert service.process.returncode is None  # still serving
