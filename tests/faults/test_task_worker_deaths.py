"""Issue #9: worker containers killed under running tasks, on the real thing: ``codeyard
serve`` on Docker, Redis and Postgres, four coding tasks through :class:`TaskRunner`, each
worker running the real Claude Code CLI against the scripted model server and pushing to
the local forge over HTTP.

The test ``docker kill``s the worker of one task once, mid-run: a new worker takes the task
over and it still merges. It kills every worker of another task: after
``worker_failure_retries`` (2) replacements the task ends failed, dead-lettered with the
reason of each death. The two other tasks merge untouched; no container is left."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import anyio
import anyio.to_thread
import docker
import pytest

from codeyard.adapters.forge import ForgeServer
from codeyard.app.tasks.run_tasks import Phase, TaskPhase, TaskRunConfig
from codeyard.client import CodeyardClient
from codeyard.domain.code_host import PullRequest, ReviewDecision, ReviewVerdict
from codeyard.domain.task_run import CodingTask, TaskStatus
from codeyard.testing.model_server import ModelServer, Router
from tests.e2e.serve_support import remove_owned, serve_env, serving
from tests.faults.task_support import developer, none_left, serving_forge, task_runner
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
NAMES = ("a", "b", "c", "d")
KILL_ONCE, KILL_ALWAYS = "t-b", "t-d"
#: The model's first answer is this slow, so the run is still going when the kill lands.
MODEL_DELAY_S = 4.0


class ApproveAll:
    """No reviewer worker: the kills are what this test is about."""

    async def review(self, pr: PullRequest, *, task: str) -> ReviewVerdict:
        return ReviewVerdict(decision=ReviewDecision.APPROVE, feedback="ok")


@pytest.fixture
async def forge(tmp_path: Path) -> AsyncIterator[ForgeServer]:
    async with serving_forge(tmp_path / "forge") as server:
        yield server


class Killer:
    """Kills the worker container of a task's run as soon as the run has begun (its first
    event is out: the CLI is waiting on the slow model), like ``docker kill``."""

    def __init__(self, client: CodeyardClient, engine: docker.DockerClient) -> None:
        self.client = client
        self.engine = engine
        self.send, self.receive = anyio.create_memory_object_stream[TaskPhase](100)
        self.killed: dict[str, list[str]] = {}  # task id -> worker ids killed
        self.kill_times: dict[str, list[float]] = {}
        self.start_times: dict[str, list[float]] = {}

    def on_phase(self, phase: TaskPhase) -> None:
        if phase.phase is Phase.STARTING:
            self.start_times.setdefault(phase.task_id, []).append(time.monotonic())
        self.send.send_nowait(phase)

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            async for phase in self.receive:
                if phase.phase is not Phase.CODING or phase.worker_id is None:
                    continue
                once = phase.task_id == KILL_ONCE and not self.killed.get(KILL_ONCE)
                if once or phase.task_id == KILL_ALWAYS:
                    self.killed.setdefault(phase.task_id, []).append(phase.worker_id)
                    tg.start_soon(self._kill, phase.task_id, phase.worker_id)

    async def _kill(self, task_id: str, worker_id: str) -> None:
        with anyio.fail_after(60):
            async with aclosing(self.client.events(worker_id, block_s=0.2)) as events:
                async for item in events:
                    if item.event.run_id is not None:  # the run has begun
                        break
            record = await self.client.status(worker_id)
        assert record.container_id is not None
        container = await anyio.to_thread.run_sync(self.engine.containers.get, record.container_id)
        await anyio.to_thread.run_sync(container.kill)  # SIGKILL: exit 137
        self.kill_times.setdefault(task_id, []).append(time.monotonic())


async def test_killed_workers_are_replaced_until_the_limit_then_dead_lettered(
    worker_redis_db: WorkerRedis,
    postgres_db: str,
    forge: ForgeServer,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    owner = "faults-deaths-" + uuid.uuid4().hex[:6]
    routes = {f"[task:{n}]": developer(n, MODEL_DELAY_S) for n in NAMES}
    async with ModelServer(Router(routes), host="0.0.0.0") as model:
        env = serve_env(
            owner=owner, redis_url=worker_redis_db.url, postgres_dsn=postgres_db, server=model
        )
        try:
            async with (
                serving(env, tmp_path / "serve.log"),
                CodeyardClient.connect(worker_redis_db.url) as client,
            ):
                runner = task_runner(
                    client,
                    forge,
                    ApproveAll(),
                    TaskRunConfig(
                        concurrency=4, max_rounds=1, turn_timeout_s=120, worker_failure_retries=2
                    ),
                )
                # No marker in the title (the commit subject): Claude Code shows the clone's
                # recent commits before the prompt, so a replacement started after another
                # task merged would otherwise be routed to that task's script.
                tasks = [
                    CodingTask(id=f"t-{n}", prompt=f"[task:{n}] write {n}", title=f"write {n}")
                    for n in NAMES
                ]
                killer = Killer(client, docker_client)
                began = time.monotonic()
                async with anyio.create_task_group() as tg:
                    tg.start_soon(killer.run)
                    outcomes = await runner.run(tasks, on_phase=killer.on_phase)
                    tg.cancel_scope.cancel()
                took = time.monotonic() - began
                active = await client.list()
                main = {
                    n: await forge.forge.read_file("app", "main", f"app/{n}.txt") for n in NAMES
                }
                leftovers = await none_left(docker_client, owner)
        finally:
            remove_owned(docker_client, owner)
    by_id = {o.task_id: o for o in outcomes}
    once, doomed = by_id[KILL_ONCE], by_id[KILL_ALWAYS]
    assert [by_id[t].status for t in ("t-a", "t-b", "t-c")] == [TaskStatus.MERGED] * 3, outcomes
    assert (by_id["t-a"].worker_failures, by_id["t-c"].worker_failures) == ((), ())
    assert once.worker_failures == ("container_killed",)
    assert once.worker_id not in killer.killed[KILL_ONCE]  # merged by the replacement
    assert doomed.status is TaskStatus.FAILED
    assert doomed.worker_failures == ("container_killed",) * 3
    assert doomed.error == (
        "dead_letter: the task's worker died 3 times (2 retries allowed): "
        "container_killed, container_killed, container_killed"
    )
    assert len(set(killer.killed[KILL_ALWAYS])) == 3  # a new worker each time
    assert main == {"a": "a\n", "b": "b\n", "c": "c\n", "d": None}
    assert active == []  # every worker deleted, the dead ones too
    assert leftovers == []
    # Figures: how long from a kill until the task's next worker was asked for.
    replaced = [
        start - kill
        for task_id in (KILL_ONCE, KILL_ALWAYS)
        for kill, start in zip(
            killer.kill_times[task_id], killer.start_times[task_id][1:], strict=False
        )
    ]
    print(
        f"worker deaths: 4 tasks in {took:.1f} s, 4 containers killed; kill -> replacement"
        f" requested {min(replaced):.2f}-{max(replaced):.2f} s (n={len(replaced)})"
    )
