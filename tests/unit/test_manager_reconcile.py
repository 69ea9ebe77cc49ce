"""Reconciler and watcher rules on the in-memory fakes, with a manual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import anyio
import pytest

from codeyard.adapters.memory.clock import ManualClock
from codeyard.adapters.memory.container_runtime import InMemoryContainerRuntime
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.adapters.memory.work_queue import InMemoryWorkQueue
from codeyard.adapters.memory.worker_credentials import InMemoryWorkerCredentials
from codeyard.adapters.memory.worker_registry import InMemoryWorkerRegistry
from codeyard.app.manager.config import ManagerConfig
from codeyard.app.manager.launch import LABEL_ROLE, ROLE_STANDBY
from codeyard.app.manager.reconcile import Reconciler
from codeyard.app.manager.slots import Slots
from codeyard.app.manager.watcher import WorkerWatcher
from codeyard.domain.agent import ResultStatus
from codeyard.domain.container import LABEL_WORKER, ContainerSpec
from codeyard.domain.events import AgentEvent, LifecyclePayload, ResultPayload
from codeyard.domain.streams import worker_output_stream
from codeyard.domain.task import JobStatus
from codeyard.domain.worker import WorkerRecord, WorkerSpec, WorkerStatus
from codeyard.domain.worker_io import EVENT_FIELD, TYPE_FIELD

pytestmark = pytest.mark.anyio
ME, OTHER = "me", "other"


@dataclass
class World:
    clock: ManualClock
    bus: InMemoryEventBus
    registry: InMemoryWorkerRegistry
    runtime: InMemoryContainerRuntime
    other_runtime: InMemoryContainerRuntime
    queue: InMemoryWorkQueue
    slots: Slots
    watcher: WorkerWatcher
    reconciler: Reconciler

    async def worker(
        self, worker_id: str, command: tuple[str, ...] = ("sleep", "1000"), *, host: str = ME
    ) -> WorkerRecord:
        runtime = self.runtime if host == ME else self.other_runtime
        info = await runtime.create(
            ContainerSpec(image="img", command=command, labels={LABEL_WORKER: worker_id})
        )
        await runtime.start(info.id)
        now = self.clock.now()
        await self.registry.register(
            WorkerRecord(
                worker_id=worker_id,
                spec=WorkerSpec(),
                host=host,
                created_at=now,
                heartbeat_at=now,
            )
        )
        return await self.registry.set_status(worker_id, WorkerStatus.RUNNING, container_id=info.id)

    async def results(self, worker_id: str) -> list[AgentEvent]:
        entries = await self.bus.read(worker_output_stream(worker_id))
        events = [AgentEvent.model_validate_json(e.fields[EVENT_FIELD]) for e in entries]
        return [e for e in events if isinstance(e.payload, ResultPayload)]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = ManualClock()
    config = ManagerConfig(
        owner=ME, orphan_grace_s=60, heartbeat_timeout_s=30, watch_interval_s=3600
    )
    bus, registry = InMemoryEventBus(clock=clock), InMemoryWorkerRegistry(clock=clock)
    runtime = InMemoryContainerRuntime(owner=ME, clock=clock)
    queue, slots = InMemoryWorkQueue(clock=clock), Slots(4)
    watcher = WorkerWatcher(
        config=config, bus=bus, registry=registry, runtime=runtime, queue=queue,
        clock=clock, slots=slots,
    )  # fmt: skip
    reconciler = Reconciler(
        config=config, registry=registry, runtime=runtime, clock=clock, slots=slots,
        watcher=watcher,
    )  # fmt: skip
    other = InMemoryContainerRuntime(owner=OTHER, clock=clock)
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        yield World(clock, bus, registry, runtime, other, queue, slots, watcher, reconciler)
        tg.cancel_scope.cancel()


async def test_live_workers_are_adopted_and_other_owners_left_alone(world: World) -> None:
    mine = await world.worker("w-mine")
    theirs = await world.worker("w-theirs", host=OTHER)
    report = await world.reconciler.reconcile()
    assert report.adopted == ["w-mine"]
    assert world.watcher.watched() == ["w-mine"]
    assert world.slots.holds("w-mine")
    assert (await world.registry.get("w-theirs")).status is WorkerStatus.RUNNING  # type: ignore[union-attr]
    assert theirs.container_id in [c.id for c in await world.other_runtime.list()]
    assert mine.container_id in [c.id for c in await world.runtime.list()]


async def test_dead_and_vanished_workers_fail_with_a_result_on_their_stream(world: World) -> None:
    dead = await world.worker("w-dead", ("sh", "-c", "exit 3"))
    vanished = await world.worker("w-gone")
    assert vanished.container_id is not None
    await world.runtime.remove(vanished.container_id)
    report = await world.reconciler.reconcile()
    assert sorted(report.failed) == ["w-dead", "w-gone"]
    for worker_id, reason in (("w-dead", "container_exited_3"), ("w-gone", "container_vanished")):
        record = await world.registry.get(worker_id)
        assert record is not None
        assert (record.status, record.error) == (WorkerStatus.FAILED, reason)
        (result,) = await world.results(worker_id)
        assert isinstance(result.payload, ResultPayload)
        assert result.payload.result.status is ResultStatus.ERROR
        assert result.payload.result.terminal_reason == reason
    assert dead.container_id not in [c.id for c in await world.runtime.list()]


async def test_orphans_are_removed_after_the_grace_period_standbys_at_once(world: World) -> None:
    orphan = await world.runtime.create(ContainerSpec(image="img", command=("sleep", "1000")))
    standby = await world.runtime.create(
        ContainerSpec(image="img", command=("sleep", "1000"), labels={LABEL_ROLE: ROLE_STANDBY})
    )
    first = await world.reconciler.reconcile()
    assert first.removed == [standby.id]  # an earlier run's standby: not in this pool
    world.clock.advance(61)
    second = await world.reconciler.reconcile()
    assert second.removed == [orphan.id]


async def test_a_create_cut_short_is_left_to_its_redelivery_then_failed(world: World) -> None:
    now = world.clock.now()
    record = WorkerRecord(worker_id="w-half", spec=WorkerSpec(), host=ME, created_at=now,
                          heartbeat_at=now)  # fmt: skip
    await world.registry.register(record)
    made = await world.runtime.create(
        ContainerSpec(image="img", command=("sleep", "1000"), labels={LABEL_WORKER: "w-half"})
    )
    # Past orphan_grace_s (60) but not takeover_s (180) + grace: its create may still be
    # re-delivered, so it waits; its container (made before the crash) counts as
    # referenced, not as an orphan.
    world.clock.advance(120)
    waiting = await world.reconciler.reconcile()
    assert waiting.failed == []
    assert made.id not in waiting.removed
    assert (await world.registry.get("w-half")).status is WorkerStatus.STARTING  # type: ignore[union-attr]
    world.clock.advance(121)  # 241 s > 180 + 60: no re-delivery came, the record fails
    report = await world.reconciler.reconcile()
    assert report.failed == ["w-half"]
    assert made.id not in report.removed
    assert (await world.registry.get("w-half")).status is WorkerStatus.FAILED  # type: ignore[union-attr]


async def test_a_silent_worker_turns_unhealthy_and_its_job_is_requeued(world: World) -> None:
    await world.queue.enqueue("tasks", {"scope": "backend"}, job_id="job-1")
    job = await world.queue.claim("tasks", "orchestrator", lease=timedelta(minutes=10))
    assert job is not None
    await world.worker("w-silent")
    await world.registry.set_status("w-silent", WorkerStatus.RUNNING, task_id="job-1")
    await world.reconciler.reconcile()
    world.clock.advance(31)
    await world.watcher.sweep()
    record = await world.registry.get("w-silent")
    assert record is not None
    assert (record.status, record.error) == (WorkerStatus.UNHEALTHY, "heartbeat timeout")
    requeued = await world.queue.get("job-1")
    assert requeued is not None
    assert (requeued.status, requeued.attempts) == (JobStatus.QUEUED, 1)
    # A heartbeat after all: alive again.
    beat = LifecyclePayload(state="heartbeat", detail={"at": world.clock.now().isoformat()})
    event = AgentEvent(seq=9, payload=beat, worker_id="w-silent")
    await world.bus.publish(
        worker_output_stream("w-silent"),
        {EVENT_FIELD: event.model_dump_json(), TYPE_FIELD: beat.type},
    )
    with anyio.fail_after(5):
        while (await world.registry.get("w-silent")).status is not WorkerStatus.RUNNING:  # type: ignore[union-attr]  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def test_logins_without_a_container_or_live_worker_are_revoked(world: World) -> None:
    shared: dict[tuple[str, str], tuple[str, set[str]]] = {}
    logins, theirs = (
        InMemoryWorkerCredentials(ME, logins=shared),
        InMemoryWorkerCredentials(OTHER, logins=shared),
    )
    reconciler = Reconciler(
        config=ManagerConfig(owner=ME, orphan_grace_s=60), registry=world.registry,
        runtime=world.runtime, clock=world.clock, slots=world.slots, watcher=world.watcher,
        worker_logins=logins,
    )  # fmt: skip
    await world.worker("w-live")
    now = world.clock.now()
    await world.registry.register(
        WorkerRecord(worker_id="w-starting", spec=WorkerSpec(), host=ME, created_at=now,
                     heartbeat_at=now)
    )  # fmt: skip
    await world.runtime.create(
        ContainerSpec(image="img", command=("sleep", "1000"),
                      labels={LABEL_ROLE: ROLE_STANDBY, LABEL_WORKER: "pool-old"})
    )  # fmt: skip
    for slot in ("w-live", "w-starting", "pool-gone", "pool-old", "w-ended"):
        await logins.issue(slot)
    await theirs.issue("pool-gone")
    report = await reconciler.reconcile()
    # pool-old: a standby of an earlier run, removed with its login.
    assert sorted(report.revoked) == ["pool-gone", "pool-old", "w-ended"]
    assert await logins.slots() == ("w-live", "w-starting")
    assert await theirs.slots() == ("pool-gone",)
