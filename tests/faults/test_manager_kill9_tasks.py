"""Issue #9: ``kill -9`` of the manager with coding tasks in flight, then a restart, on the
real thing: ``codeyard serve`` on Docker, Redis and Postgres, 20 tasks through one
:class:`TaskRunner`, each a worker running the real Claude Code CLI against the scripted
model server, pushing its branch to the local forge over HTTP, a pull request opened, a
reviewer agent (a worker too) approving it, the PR squash-merged.

The manager dies as the :data:`KILL_AFTER_PRS`-th pull request opens: by then workers are
being created, CLIs are running and reviews are under way. After the restart every task
ends merged, every PR is merged exactly once, each task's branch holds exactly its one
commit (no re-run prompt committed again), no worker's output has two results for a run,
no task lost a worker, and no container nor live worker record is left. Prints the time
from the restart to the last merge and what was in flight at the kill (``-s``)."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import docker
import pytest
import redis.asyncio

from codeyard.adapters.forge import ForgeServer
from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.app.tasks.review import REVIEW_MARKER, Reviewer
from codeyard.app.tasks.run_tasks import Phase, TaskPhase, TaskRunConfig
from codeyard.client import CodeyardClient
from codeyard.domain.code_host import PullRequest, PullRequestNotFound, PullRequestState
from codeyard.domain.errors import WorkerNotFound
from codeyard.domain.events import AgentEvent, ResultPayload
from codeyard.domain.streams import worker_output_stream
from codeyard.domain.task_run import CodingTask, TaskOutcome, TaskStatus
from codeyard.domain.worker_io import EVENT_FIELD
from codeyard.testing.model_server import ModelServer, Router, Scenario
from tests.e2e.serve_support import Serve, owned_containers, remove_owned, serve_env, serving
from tests.faults.task_support import (
    REPO,
    developer,
    developer_spec,
    none_left,
    serving_forge,
    task_runner,
)
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
#: Tasks at once: half the tasks, so the kill finds every stage (created, coding, in
#: review) and the other half still queued, on 2 CPUs (each CLI takes ~1.3 CPU-s).
CONCURRENCY = 10
#: The manager is killed as this many pull requests have opened.
KILL_AFTER_PRS = 4
#: The developer model's first answer is this slow: CLIs are mid-run at the kill.
MODEL_DELAY_S = 2.0
APPROVE = '{"decision": "approve", "feedback": "Looks good."}'
MERGED = TaskStatus.MERGED
NAMES = tuple(f"n{i:02d}" for i in range(TASKS))


@pytest.fixture
async def forge(tmp_path: Path) -> AsyncIterator[ForgeServer]:
    async with serving_forge(tmp_path / "forge") as server:
        yield server


@dataclass
class Flight:
    """Where each task stands; kills the manager as the KILL_AFTER_PRS-th PR opens."""

    serve: Serve | None = None
    phases: dict[str, Phase] = field(default_factory=dict)
    finished: dict[str, float] = field(default_factory=dict)  # task id -> when it ended
    prs_opened: int = 0
    reviews: int = 0  # reviewer runs under way
    killed: anyio.Event = field(default_factory=anyio.Event)
    #: At the kill: the phase of every task begun and not ended, reviews under way.
    at_kill: dict[str, Phase] = field(default_factory=dict)
    reviews_at_kill: int = 0
    ended_at_kill: int = 0
    containers_at_kill: int = 0
    restarted: float = 0.0
    ready_s: float = 0.0

    def on_phase(self, phase: TaskPhase) -> None:
        self.phases[phase.task_id] = phase.phase
        if phase.phase is Phase.REVIEWING:  # entered right after the PR opened
            self.prs_opened += 1
            if self.prs_opened == KILL_AFTER_PRS:
                self.kill()

    def kill(self) -> None:
        assert self.serve is not None
        self.serve.kill9()  # synchronous: nothing else runs between the trigger and it
        self.at_kill = {t: p for t, p in self.phases.items() if t not in self.finished}
        self.reviews_at_kill = self.reviews
        self.ended_at_kill = len(self.finished)
        self.killed.set()

    def on_outcome(self, outcome: TaskOutcome) -> None:
        self.finished[outcome.task_id] = time.monotonic()


async def manager(
    env: dict[str, str],
    logs: Path,
    engine: docker.DockerClient,
    flight: Flight,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """``codeyard serve`` until the flight kills it, then a new one until cancelled."""
    async with serving(env, logs / "serve-1.log") as first:
        flight.serve = first
        task_status.started()
        await flight.killed.wait()
        await first.process.wait()
    owner = env["CODEYARD_OWNER"]
    flight.containers_at_kill = len(await anyio.to_thread.run_sync(owned_containers, engine, owner))
    flight.restarted = time.monotonic()
    async with serving(env, logs / "serve-2.log"):
        flight.ready_s = time.monotonic() - flight.restarted
        await anyio.sleep_forever()


async def pull_requests(forge: ForgeServer) -> list[PullRequest]:
    found: list[PullRequest] = []
    while True:
        try:
            found.append(await forge.forge.get_pull_request(REPO, len(found) + 1))
        except PullRequestNotFound:
            return found


def git(bare: Path, *args: str) -> list[str]:
    done = subprocess.run(
        ["git", "--git-dir", str(bare), *args], check=True, capture_output=True, text=True
    )
    return done.stdout.splitlines()


async def results_by_worker(redis_url: str) -> dict[str, Counter[str]]:
    """For every worker that ever had an output stream in this test's Redis database (the
    reviewers' too, whose ids the client picks): how many results each run got."""
    bus = RedisEventBus.from_url(redis_url)
    admin = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    try:
        keys = [key async for key in admin.scan_iter(match=worker_output_stream("*"))]
        found: dict[str, Counter[str]] = {}
        for key in keys:
            worker_id = key.removeprefix("worker:").removesuffix(":output")
            entries = await bus.read(worker_output_stream(worker_id), count=100_000)
            events = [
                AgentEvent.parse(e.fields[EVENT_FIELD]) for e in entries if EVENT_FIELD in e.fields
            ]
            found[worker_id] = Counter(
                str(e.run_id) for e in events if isinstance(e.payload, ResultPayload)
            )
        return found
    finally:
        await admin.aclose()
        await bus.aclose()


async def trail(redis_url: str, worker_id: str) -> list[str]:
    """The last output events of a worker, to tell why its task failed."""
    bus = RedisEventBus.from_url(redis_url)
    try:
        entries = await bus.read(worker_output_stream(worker_id), count=100_000)
    finally:
        await bus.aclose()
    return [e.fields.get(EVENT_FIELD, str(e.fields))[:300] for e in entries][-8:]


async def assert_merged_once(
    forge: ForgeServer, tasks: list[CodingTask], by_id: dict[str, TaskOutcome]
) -> None:
    """One PR per task, merged; one squash commit per task on main; each task's branch
    holds exactly its one commit (a re-run prompt would have committed again)."""
    prs = await pull_requests(forge)
    assert sorted(pr.head for pr in prs) == sorted(t.branch for t in tasks)
    assert {pr.state for pr in prs} == {PullRequestState.MERGED}
    bare = forge.forge.repo_path(REPO)
    log = git(bare, "log", "--format=%s", "main")
    assert Counter(log) == Counter([t.commit_message for t in tasks] + [log[-1]])
    merged_at = {pr.head: pr.merge_sha for pr in prs}
    for name, task in zip(NAMES, tasks, strict=True):
        # The branch's own commits: not on main as it was right before the squash merge.
        own = git(bare, "rev-list", f"{merged_at[task.branch]}^..{task.branch}")
        assert len(own) == 1, (task.id, own)
        assert by_id[task.id].commits == tuple(own), by_id[task.id]
        assert await forge.forge.read_file(REPO, "main", f"app/{name}.txt") == f"{name}\n"


def assert_one_result_per_run(
    results: dict[str, Counter[str]], outcomes: list[TaskOutcome]
) -> None:
    """No run of any worker got two results; each task's review got its one result."""
    duplicated = {w: {r: n for r, n in c.items() if n > 1} for w, c in results.items()}
    assert {w: d for w, d in duplicated.items() if d} == {}
    developers = {o.worker_id for o in outcomes}
    assert developers <= set(results)
    reviews = sum(c.total() for w, c in results.items() if w not in developers)
    assert reviews == TASKS, results


async def live_workers(client: CodeyardClient, worker_ids: Iterable[str]) -> dict[str, str]:
    """The status of each of ``worker_ids`` whose record is not terminal."""
    live: dict[str, str] = {}
    for worker_id in worker_ids:
        try:
            record = await client.status(worker_id)
        except WorkerNotFound:
            continue
        if not record.status.is_terminal:
            live[worker_id] = record.status.value
    return live


async def test_kill_9_with_20_coding_tasks_in_flight_then_restart_merges_each_once(
    worker_redis_db: WorkerRedis,
    postgres_db: str,
    forge: ForgeServer,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    owner = "faults-k9t-" + uuid.uuid4().hex[:6]
    routes = {f"[task:{n}]": developer(n, MODEL_DELAY_S) for n in NAMES}
    routes[REVIEW_MARKER] = Scenario.text(f"Verdict:\n{APPROVE}")
    # No marker in the title (the commit subject): Claude Code shows the clone's recent
    # commits before the prompt, and the router takes the first marker it sees.
    tasks = [
        CodingTask(id=f"t-{n}", prompt=f"[task:{n}] write {n}", title=f"write {n}") for n in NAMES
    ]
    flight = Flight()
    async with ModelServer(Router(routes), host="0.0.0.0") as model:
        env = serve_env(
            owner=owner,
            redis_url=worker_redis_db.url,
            postgres_dsn=postgres_db,
            server=model,
            # The restart takes over the dead manager's pending commands after 2 s, not 180.
            CODEYARD_MANAGER__TAKEOVER_S="2",
            CODEYARD_MAX_WORKERS=str(2 * CONCURRENCY + 4),  # developers and reviewers
        )
        try:
            # Commands sent while the manager is down wait for the restart (+ takeover).
            async with (
                CodeyardClient.connect(worker_redis_db.url, reply_timeout_s=120) as client,
                anyio.create_task_group() as tg,
            ):
                await tg.start(manager, env, tmp_path, docker_client, flight)
                spec = developer_spec(forge)

                async def ask(prompt: str) -> str:
                    flight.reviews += 1
                    try:
                        return (await client.run(spec, prompt, timeout_s=300)).text
                    finally:
                        flight.reviews -= 1

                config = TaskRunConfig(concurrency=CONCURRENCY, max_rounds=1, turn_timeout_s=300)
                runner = task_runner(client, forge, Reviewer(forge.forge, ask), config)
                began = time.monotonic()
                outcomes = await runner.run(
                    tasks, on_phase=flight.on_phase, on_outcome=flight.on_outcome
                )
                took = time.monotonic() - began
                await anyio.sleep(1)  # a duplicate result would come right after the first
                results = await results_by_worker(worker_redis_db.url)
                trails = {
                    o.task_id: await trail(worker_redis_db.url, o.worker_id)
                    for o in outcomes
                    if o.status != MERGED and o.worker_id
                }
                live = await live_workers(client, results)
                active = await client.list()
                leftovers = await none_left(docker_client, owner)
                tg.cancel_scope.cancel()
        finally:
            remove_owned(docker_client, owner)
    assert flight.killed.is_set(), f"only {flight.prs_opened} PRs opened"
    by_id = {o.task_id: o for o in outcomes}
    unmerged = {o.task_id: (o.status.value, o.error) for o in outcomes if o.status != MERGED}
    assert unmerged == {}, (flight.at_kill, trails)
    # The manager's death kills no worker: no task needed a new one.
    assert {t: o.worker_failures for t, o in by_id.items() if o.worker_failures} == {}
    await assert_merged_once(forge, tasks, by_id)
    assert_one_result_per_run(results, outcomes)
    assert live == {}  # every worker that ever ran (reviewers too) ended
    assert active == []  # no worker record left non-terminal
    assert leftovers == []  # zero containers with the owner's label
    last_merge_s = max(flight.finished.values()) - flight.restarted
    stages = Counter(p.value for p in flight.at_kill.values())
    print(
        f"kill -9 with {len(flight.at_kill)} of {TASKS} tasks in flight ({dict(stages)},"
        f" {flight.reviews_at_kill} reviewer runs, {flight.containers_at_kill} containers,"
        f" {flight.ended_at_kill} merged before): restart ready in"
        f" {flight.ready_s:.1f} s, last merge {last_merge_s:.1f} s after the restart;"
        f" {TASKS} tasks in {took:.1f} s"
    )
