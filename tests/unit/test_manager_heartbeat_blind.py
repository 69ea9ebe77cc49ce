"""No "heartbeat timeout" verdict on heartbeats the manager could not read (in-memory fakes,
manual clock).

Workers ride out a Redis outage (up to ``worker_redis_outage_s``, 60 s), buffering their
events; the manager could read no heartbeat meanwhile, so once Redis was back after more
than ``heartbeat_timeout_s`` its first sweeps marked every worker UNHEALTHY and requeued
every job (duplicate work for healthy workers). Likewise a manager restarted after a
worker's last heartbeat it has judged the worker at its first sweep. The watcher now judges
a worker only after a whole timeout of reading its output stream (``watcher`` module doc).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
import pytest

from codeyard.adapters.memory.clock import ManualClock
from codeyard.adapters.memory.container_runtime import InMemoryContainerRuntime
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.adapters.memory.work_queue import InMemoryWorkQueue
from codeyard.adapters.memory.worker_registry import InMemoryWorkerRegistry
from codeyard.app.manager.config import ManagerConfig
from codeyard.app.manager.deaths import silent
from codeyard.app.manager.reconcile import Reconciler
from codeyard.app.manager.slots import Slots
from codeyard.app.manager.watcher import WorkerWatcher
from codeyard.domain.container import LABEL_WORKER, ContainerSpec
from codeyard.domain.errors import ServiceUnavailable
from codeyard.domain.events import AgentEvent, LifecyclePayload
from codeyard.domain.streams import StreamMessage, worker_output_stream
from codeyard.domain.task import JobStatus
from codeyard.domain.worker import WorkerRecord, WorkerSpec, WorkerStatus
from codeyard.domain.worker_io import EVENT_FIELD, TYPE_FIELD

pytestmark = pytest.mark.anyio
TIMEOUT_S = 30.0
QUIET, ALIVE = "w-quiet", "w-alive"


class FlakyBus(InMemoryEventBus):
    """Redis unreachable for reads while ``down``; counts read attempts per stream."""

    down = False

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock=clock)
        self.failed: Counter[str] = Counter()
        self.tried: Counter[str] = Counter()

    async def read(
        self, stream: str, *, after: str = "0-0", count: int = 100, block_s: float | None = None
    ) -> list[StreamMessage]:
        self.tried[stream] += 1
        if self.down:
            self.failed[stream] += 1
            raise ServiceUnavailable("redis down", service="redis")
        return await super().read(stream, after=after, count=count, block_s=block_s)


@dataclass
class World:
    clock: ManualClock
    bus: FlakyBus
    registry: InMemoryWorkerRegistry
    runtime: InMemoryContainerRuntime
    queue: InMemoryWorkQueue
    config: ManagerConfig

    def manager(self) -> tuple[WorkerWatcher, Reconciler]:
        """A (new) manager's watcher and reconciler on these stores."""
        slots = Slots(4)
        watcher = WorkerWatcher(
            config=self.config, bus=self.bus, registry=self.registry, runtime=self.runtime,
            queue=self.queue, clock=self.clock, slots=slots,
        )  # fmt: skip
        reconciler = Reconciler(
            config=self.config, registry=self.registry, runtime=self.runtime,
            clock=self.clock, slots=slots, watcher=watcher,
        )  # fmt: skip
        return watcher, reconciler

    async def worker(self, worker_id: str) -> None:
        """A RUNNING worker of this owner, its container running, holding job ``job-<id>``."""
        job_id = "job-" + worker_id
        await self.queue.enqueue("tasks", {"scope": "backend"}, job_id=job_id)
        job = await self.queue.claim("tasks", "orchestrator", lease=timedelta(minutes=10))
        assert job is not None
        assert job.id == job_id
        info = await self.runtime.create(
            ContainerSpec(image="img", command=("sleep", "1000"), labels={LABEL_WORKER: worker_id})
        )
        await self.runtime.start(info.id)
        now = self.clock.now()
        await self.registry.register(
            WorkerRecord(worker_id=worker_id, spec=WorkerSpec(), host="me", created_at=now,
                         heartbeat_at=now)
        )  # fmt: skip
        await self.registry.set_status(
            worker_id, WorkerStatus.RUNNING, container_id=info.id, task_id=job_id
        )

    async def say(self, worker_id: str) -> None:
        """The worker's wrapper publishes a heartbeat (at the clock's now)."""
        payload = LifecyclePayload(state="heartbeat", detail={"at": self.clock.now().isoformat()})
        event = AgentEvent(seq=1, payload=payload, worker_id=worker_id)
        await self.bus.publish(
            worker_output_stream(worker_id),
            {EVENT_FIELD: event.model_dump_json(), TYPE_FIELD: payload.type},
        )

    async def beat(self, worker_id: str) -> None:
        """The worker's heartbeat, once the manager has applied it."""
        now = self.clock.now()
        await self.say(worker_id)
        with anyio.fail_after(5):
            while (await self.record(worker_id)).heartbeat_at != now:  # noqa: ASYNC110
                await anyio.sleep(0.01)

    async def record(self, worker_id: str) -> WorkerRecord:
        record = await self.registry.get(worker_id)
        assert record is not None
        return record

    async def verdicts(self) -> dict[str, tuple[WorkerStatus, JobStatus]]:
        """Each worker's status and its job's."""
        out: dict[str, tuple[WorkerStatus, JobStatus]] = {}
        for worker_id in (QUIET, ALIVE):
            record = await self.registry.get(worker_id)
            job = await self.queue.get("job-" + worker_id)
            if record is not None and job is not None:
                out[worker_id] = (record.status, job.status)
        return out


def _world(watch_interval_s: float) -> World:
    clock = ManualClock()
    config = ManagerConfig(
        owner="me", heartbeat_timeout_s=TIMEOUT_S, watch_interval_s=watch_interval_s
    )
    return World(
        clock,
        FlakyBus(clock),
        InMemoryWorkerRegistry(clock=clock),
        InMemoryContainerRuntime(owner="me", clock=clock),
        InMemoryWorkQueue(clock=clock),
        config,
    )


async def _wait(condition: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


@pytest.fixture
async def outage_world() -> AsyncIterator[tuple[World, WorkerWatcher, Reconciler]]:
    # A short watch interval: a follower retries a failed read after it (real time), so it
    # reads again soon after Redis is back. The run loop's own sweeps judge at the manual
    # clock's time, as the test's do.
    world = _world(watch_interval_s=0.05)
    watcher, reconciler = world.manager()
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        yield world, watcher, reconciler
        tg.cancel_scope.cancel()


async def test_a_redis_outage_longer_than_the_timeout_is_no_verdict(
    outage_world: tuple[World, WorkerWatcher, Reconciler],
) -> None:
    world, watcher, reconciler = outage_world
    await world.worker(QUIET)
    await world.worker(ALIVE)
    assert sorted((await reconciler.reconcile()).adopted) == [ALIVE, QUIET]
    await world.beat(QUIET)
    await world.beat(ALIVE)
    streams = [worker_output_stream(w) for w in (QUIET, ALIVE)]

    world.bus.down = True  # Redis unreachable: every follower's reads fail, for 45 s
    await _wait(lambda: all(world.bus.failed[s] for s in streams))
    for _ in range(3):
        world.clock.advance(15)
        await watcher.sweep()
    world.bus.down = False
    back = world.clock.now()
    tried = Counter(world.bus.tried)
    # Right after: nothing judged, whether a follower has read again yet or not.
    await watcher.sweep()
    running = {w: (WorkerStatus.RUNNING, JobStatus.RUNNING) for w in (QUIET, ALIVE)}
    assert await world.verdicts() == running
    # Every follower reads again; the alive worker's first heartbeat after the outage.
    await _wait(lambda: all(world.bus.tried[s] > tried[s] for s in streams))
    await world.beat(ALIVE)
    world.clock.advance(TIMEOUT_S - 1)
    await watcher.sweep()
    assert await world.verdicts() == running
    await world.beat(ALIVE)
    # A whole timeout of reading since Redis came back, and still silent: unhealthy.
    world.clock.advance(2)
    assert world.clock.now() - back > timedelta(seconds=TIMEOUT_S)
    await watcher.sweep()
    quiet = await world.record(QUIET)
    assert (quiet.status, quiet.error) == (WorkerStatus.UNHEALTHY, "heartbeat timeout")
    assert await world.verdicts() == {
        QUIET: (WorkerStatus.UNHEALTHY, JobStatus.QUEUED),
        ALIVE: (WorkerStatus.RUNNING, JobStatus.RUNNING),
    }


async def test_a_restarted_manager_watches_a_whole_timeout_before_judging() -> None:
    world = _world(watch_interval_s=3600)  # sweeps when the test says
    await world.worker(QUIET)
    await world.worker(ALIVE)
    for worker_id in (QUIET, ALIVE):  # read by the old manager; replayed by the new one
        await world.say(worker_id)
    # The old manager died (kill -9); its successor starts a minute later. The workers'
    # last heartbeats it can know of are that old (Redis was down too, say).
    world.clock.advance(60)
    watcher, reconciler = world.manager()
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        assert sorted((await reconciler.reconcile()).adopted) == [ALIVE, QUIET]
        started = world.clock.now()
        running = {w: (WorkerStatus.RUNNING, JobStatus.RUNNING) for w in (QUIET, ALIVE)}
        await watcher.sweep()
        assert await world.verdicts() == running
        world.clock.advance(10)
        await world.beat(ALIVE)
        world.clock.advance(TIMEOUT_S - 11)
        await watcher.sweep()
        assert await world.verdicts() == running
        world.clock.advance(2)
        assert world.clock.now() - started > timedelta(seconds=TIMEOUT_S)
        await watcher.sweep()
        assert await world.verdicts() == {
            QUIET: (WorkerStatus.UNHEALTHY, JobStatus.QUEUED),
            ALIVE: (WorkerStatus.RUNNING, JobStatus.RUNNING),
        }
        tg.cancel_scope.cancel()


T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("heartbeat_s", "seeing_s", "judged"),
    [
        (0, 0, True),  # silent since before the limit, watched since before it
        (0, 10, False),  # watched only since after the limit: not a whole timeout yet
        (0, None, False),  # not reading its stream now (reads failing, not watched)
        (10, 0, False),  # heard after the limit
    ],
)
def test_silent_counts_only_what_the_manager_could_hear(
    heartbeat_s: float, seeing_s: float | None, judged: bool
) -> None:
    record = WorkerRecord(
        worker_id="w", spec=WorkerSpec(), host="me", status=WorkerStatus.RUNNING,
        container_id="c", created_at=T0, heartbeat_at=T0 + timedelta(seconds=heartbeat_s),
    )  # fmt: skip
    seeing = None if seeing_s is None else T0 + timedelta(seconds=seeing_s)
    before = T0 + timedelta(seconds=5)
    assert silent(record, owner="me", before=before, seeing_since=seeing) is judged
