"""Issue #9: ``kill -9`` of the manager with 20 tasks in flight, then a restart, on the real
thing: ``codeyard serve`` on Docker, Redis and Postgres, each task a create-with-prompt whose
worker runs the real Claude Code CLI against a slow scripted model (so runs are under way
when the manager dies, and some creates are not answered yet).

After the restart: every create is answered exactly once, every worker's run ends with
exactly one result (no duplicate on any output stream) and succeeds, deleting the 20
workers leaves zero containers with the test's owner label. Prints the time from the
restart to the last result (``-s``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import anyio.to_thread
import docker
import pytest

from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.client import CodeyardClient
from codeyard.domain.agent import ResultStatus
from codeyard.domain.commands import CreateResult, CreateWorker, Reply, command_fields
from codeyard.domain.events import AgentEvent, ResultPayload
from codeyard.domain.streams import COMMANDS_STREAM, response_stream, worker_output_stream
from codeyard.domain.worker import WorkerSpec
from codeyard.domain.worker_io import EVENT_FIELD
from codeyard.testing.model_server import Delay, ModelServer, Scenario, Text
from tests.e2e.serve_support import owned_containers, remove_owned, serve_env, serving
from tests.integration.manager_support import claude_worker_image  # noqa: F401 - fixture
from tests.services.worker_redis import WorkerRedis

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.docker,
    pytest.mark.faults,
    pytest.mark.slow,
    pytest.mark.timeout(900),  # the fixture may wait for the worker image build
    pytest.mark.usefixtures("claude_worker_image"),
]
TASKS = 20
#: Kill once this many creates are answered: the others are still being created.
KILL_AFTER_REPLIES = 6
#: The model's answer is this slow: the answered creates' runs are under way at the kill.
MODEL_DELAY_S = 8.0
ANSWER = "Done: survived the manager."


@pytest.fixture
async def model() -> AsyncIterator[ModelServer]:
    scenario = Scenario(turns=[[Delay(MODEL_DELAY_S), Text(ANSWER)]])
    async with ModelServer(scenario, host="0.0.0.0") as server:
        yield server


async def replies(bus: RedisEventBus, request_id: str) -> list[Reply]:
    entries = await bus.read(response_stream(request_id), count=100)
    return [Reply.from_fields(e.fields) for e in entries]


async def replied(bus: RedisEventBus, request_ids: Sequence[str]) -> int:
    return sum([bool(await replies(bus, rid)) for rid in request_ids])


async def wait_replied(bus: RedisEventBus, request_ids: Sequence[str], at_least: int) -> int:
    with anyio.fail_after(120):
        while (count := await replied(bus, request_ids)) < at_least:  # noqa: ASYNC110
            await anyio.sleep(0.1)  # another process answers: nothing to wait on but polling
    return count


async def output_events(bus: RedisEventBus, worker_id: str) -> list[AgentEvent]:
    entries = await bus.read(worker_output_stream(worker_id), count=100_000)
    return [AgentEvent.parse(e.fields[EVENT_FIELD]) for e in entries if EVENT_FIELD in e.fields]


async def test_kill_9_with_20_tasks_in_flight_then_restart_completes_each_once(
    worker_redis_db: WorkerRedis,
    postgres_db: str,
    model: ModelServer,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    owner = "faults-k9-" + uuid.uuid4().hex[:6]
    env = serve_env(
        owner=owner,
        redis_url=worker_redis_db.url,
        postgres_dsn=postgres_db,
        server=model,
        # The restart takes over the dead manager's pending creates after 2 s, not 180.
        # serve_env's orphan grace is 5 s: the reconciler must still leave the half-made
        # workers (STARTING, no container) to their re-delivered creates (it waits
        # takeover_s + orphan_grace_s; failing them after the grace alone answered those
        # creates with FAILED workers that never ran).
        CODEYARD_MANAGER__TAKEOVER_S="2",
        CODEYARD_MAX_WORKERS=str(TASKS + 4),
    )
    request_ids = [f"k9-{i:02d}-{uuid.uuid4().hex[:6]}" for i in range(TASKS)]
    bus = RedisEventBus.from_url(worker_redis_db.url)
    client = CodeyardClient(bus)
    try:
        async with serving(env, tmp_path / "serve-1.log") as first:
            for rid in request_ids:
                command = CreateWorker(request_id=rid, spec=WorkerSpec(), prompt="do the task")
                await bus.publish(COMMANDS_STREAM, command_fields(command))
            at_kill = await wait_replied(bus, request_ids, KILL_AFTER_REPLIES)
            first.kill9()
            await first.process.wait()
        containers_at_kill = len(owned_containers(docker_client, owner))
        restarted = time.monotonic()
        async with serving(env, tmp_path / "serve-2.log"):
            ready_s = time.monotonic() - restarted
            await wait_replied(bus, request_ids, TASKS)
            answers = {rid: await replies(bus, rid) for rid in request_ids}
            created = {
                rid: CreateResult.model_validate(r[0].result)
                for rid, r in answers.items()
                if r and r[0].ok
            }
            dead = {rid: m.status.value for rid, m in created.items() if not m.status.is_active}
            assert not dead, f"creates answered with an ended worker: {dead}"
            results = {
                rid: await client.wait_result(
                    made.worker_id, request_id=made.prompt_request_id, timeout_s=120
                )
                for rid, made in created.items()
            }
            all_results_s = time.monotonic() - restarted
            await anyio.sleep(1)  # a duplicate result would come right after the first
            streams = {
                made.worker_id: await output_events(bus, made.worker_id)
                for made in created.values()
            }
            async with anyio.create_task_group() as tg:
                for made in created.values():
                    tg.start_soon(client.delete, made.worker_id)
            active = await client.list()
            with anyio.move_on_after(30):
                while await anyio.to_thread.run_sync(owned_containers, docker_client, owner):  # noqa: ASYNC110
                    await anyio.sleep(0.2)  # the engine is another process: poll
            left = await anyio.to_thread.run_sync(owned_containers, docker_client, owner)
    finally:
        await bus.aclose()
        remove_owned(docker_client, owner)
    assert all(len(r) == 1 for r in answers.values()), answers  # each create answered once
    assert len(created) == TASKS, answers  # ...and successfully
    assert len({made.worker_id for made in created.values()}) == TASKS
    for rid, result in results.items():
        assert result.status is ResultStatus.SUCCESS, (rid, result)
        assert result.text == ANSWER
    for worker_id, events in streams.items():
        ended = [e.run_id for e in events if isinstance(e.payload, ResultPayload)]
        made = next(m for m in created.values() if m.worker_id == worker_id)
        assert ended == [made.prompt_request_id], (worker_id, ended)  # one result, its run's
    assert active == []  # all 20 workers deleted
    assert left == []  # zero containers with the owner's label
    print(
        f"kill -9 with {TASKS} creates in flight ({at_kill} answered, {containers_at_kill}"
        f" containers at the kill): restart ready in {ready_s:.1f} s, all {TASKS} results"
        f" {all_results_s:.1f} s after the restart"
    )
