"""Every run of a worker that dies gets exactly one result, on the in-memory fakes.

Found by bench/soak_faults.py: a worker killed (or exiting on its own) before its run's
first event got a death result with ``run_id: null`` only, so a client waiting on the
create's ``prompt_request_id`` waited forever; and one worker got two death results, the
sweep and the reconciler both finishing it (the sweep did not take the worker's lock), or
a finish cut short by a store outage after its publish running again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from codeyard.adapters.memory.clock import ManualClock
from codeyard.adapters.memory.code_agent import ScriptedCodeAgent
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.adapters.memory.image_cache import InMemoryImageCache
from codeyard.adapters.memory.work_queue import InMemoryWorkQueue
from codeyard.adapters.memory.worker_registry import InMemoryWorkerRegistry
from codeyard.app.bootstrap import App
from codeyard.app.manager.config import ManagerConfig
from codeyard.app.manager.images import WorkerImages
from codeyard.app.manager.serve import Manager, build_manager
from codeyard.app.settings import Settings
from codeyard.domain.agent import AgentResult, ResultStatus
from codeyard.domain.commands import CreateWorker, SendPrompt
from codeyard.domain.errors import ServiceUnavailable
from codeyard.domain.events import AgentEvent, EventSequencer, InitPayload, ResultPayload
from codeyard.domain.streams import worker_output_stream
from codeyard.domain.worker import WorkerRecord, WorkerStatus
from codeyard.domain.worker_io import EVENT_FIELD, TYPE_FIELD
from tests.unit.pool_support import LiveWorkersRuntime

pytestmark = pytest.mark.anyio
KILLED = 137


class KillableRuntime(LiveWorkersRuntime):
    def kill(self, container_id: str, exit_code: int = KILLED) -> None:
        """The container's process ends now with ``exit_code`` (``docker kill``: 137)."""
        self._finish(self._get(container_id), exit_code, self._clock.now())


class FlakyRegistry(InMemoryWorkerRegistry):
    """Postgres down for status writes while ``down`` (a store outage mid-finish)."""

    down = False

    async def set_status(self, worker_id: str, status: WorkerStatus, **kw: Any) -> WorkerRecord:
        if self.down:
            raise ServiceUnavailable("postgres down", service="postgres")
        return await super().set_status(worker_id, status, **kw)


@dataclass
class World:
    clock: ManualClock
    registry: FlakyRegistry
    bus: InMemoryEventBus
    runtime: KillableRuntime
    app: App
    manager: Manager

    def build(self) -> Manager:
        """Another manager of the same owner on the same stores (one restarted)."""
        return _manager(self.app)

    async def create(self, worker_id: str, prompt: str | None = "hi") -> None:
        await self.manager.handler.handle(
            CreateWorker(request_id="r-" + worker_id, worker_id=worker_id, prompt=prompt)
        )

    async def kill(self, worker_id: str, exit_code: int = KILLED) -> None:
        record = await self.registry.get(worker_id)
        assert record is not None
        assert record.container_id is not None
        self.runtime.kill(record.container_id, exit_code)

    async def say(self, worker_id: str, run_id: str, *, result: bool = False) -> None:
        """The worker's wrapper publishes an event (its result with ``result``) of a run."""
        sequencer = EventSequencer(provider="claude", worker_id=worker_id, run_id=run_id)
        payload = (
            ResultPayload(result=AgentResult(status=ResultStatus.SUCCESS, provider="claude"))
            if result
            else InitPayload(session_id="s-1")
        )
        event = sequencer.stamp(payload)
        await self.bus.publish(
            worker_output_stream(worker_id),
            {EVENT_FIELD: event.model_dump_json(), TYPE_FIELD: event.payload.type},
        )

    async def results(self, worker_id: str) -> list[tuple[str | None, str | None]]:
        """(run id, terminal reason) of every result on the worker's output stream."""
        entries = await self.bus.read(worker_output_stream(worker_id), count=1000)
        events = [AgentEvent.parse(e.fields[EVENT_FIELD]) for e in entries]
        return [
            (e.run_id, e.payload.result.terminal_reason)
            for e in events
            if isinstance(e.payload, ResultPayload)
        ]

    async def status(self, worker_id: str) -> WorkerStatus:
        record = await self.registry.get(worker_id)
        assert record is not None
        return record.status


def _manager(app: App) -> Manager:
    images = WorkerImages(
        InMemoryImageCache(clock=app.clock), base_image="b", wrapper_hash="w", ca_certs_hash=""
    )
    config = ManagerConfig(owner="me", watch_interval_s=3600)  # sweeps when the test says
    return build_manager(app, config, images)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = ManualClock()
    registry, bus = FlakyRegistry(clock=clock), InMemoryEventBus(clock=clock)
    runtime = KillableRuntime(owner="me", clock=clock)
    app = App(
        settings=Settings(),
        clock=clock,
        event_bus=bus,
        queue=InMemoryWorkQueue(clock=clock),
        registry=registry,
        runtime=runtime,
        image_cache=InMemoryImageCache(clock=clock),
        code_agent=ScriptedCodeAgent(),
    )
    manager = _manager(app)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.watcher.run)
        yield World(clock, registry, bus, runtime, app, manager)
        tg.cancel_scope.cancel()


DIED = (None, "container_killed")


async def test_a_worker_killed_before_its_first_event_fails_the_creates_run(
    world: World,
) -> None:
    await world.create("w-1")
    await world.kill("w-1")
    await world.manager.watcher.sweep()
    # The prompt's run (the create's request id), then the worker's own death.
    assert await world.results("w-1") == [("r-w-1", "container_killed"), DIED]
    assert await world.status("w-1") is WorkerStatus.FAILED
    assert world.manager.watcher.watched() == []


async def test_the_run_in_flight_and_a_queued_send_each_get_one_result(world: World) -> None:
    await world.create("w-1")
    await world.say("w-1", "r-w-1")  # under way; its input entry stays until its result
    await world.manager.handler.handle(
        SendPrompt(request_id="r-send", worker_id="w-1", prompt="more")
    )
    await world.kill("w-1", exit_code=1)
    await world.manager.watcher.sweep()
    assert await world.results("w-1") == [
        ("r-w-1", "container_exited_1"),
        ("r-send", "container_exited_1"),
        (None, "container_exited_1"),
    ]


async def test_a_run_with_its_result_gets_no_second_one(world: World) -> None:
    # The worker died after its result, before it deleted the prompt's input entry.
    await world.create("w-1")
    await world.say("w-1", "r-w-1", result=True)
    await world.kill("w-1")
    await world.manager.watcher.sweep()
    assert await world.results("w-1") == [("r-w-1", None), DIED]


async def test_a_worker_without_runs_gets_its_death_result_only(world: World) -> None:
    await world.create("w-1", prompt=None)
    await world.kill("w-1")
    await world.manager.watcher.sweep()
    assert await world.results("w-1") == [DIED]


async def test_a_clean_exit_fails_only_the_runs_left_unanswered(world: World) -> None:
    await world.create("w-1")
    await world.kill("w-1", exit_code=0)
    await world.manager.watcher.sweep()
    assert await world.results("w-1") == [("r-w-1", "container_exited_0")]
    assert await world.status("w-1") is WorkerStatus.STOPPED


async def test_a_restarted_manager_fails_the_run_of_a_worker_it_adopted(world: World) -> None:
    await world.create("w-1")
    # The manager is killed (its watcher with it); the next one adopts the worker.
    world.manager.watcher.unwatch("w-1")
    restarted = world.build()
    async with anyio.create_task_group() as tg:
        await tg.start(restarted.watcher.run)
        report = await restarted.reconciler.reconcile()
        assert report.adopted == ["w-1"]
        await world.kill("w-1")
        await restarted.watcher.sweep()
        tg.cancel_scope.cancel()
    assert await world.results("w-1") == [("r-w-1", "container_killed"), DIED]


async def test_a_restarted_manager_finishing_a_dead_worker_reports_its_run(
    world: World,
) -> None:
    await world.create("w-1")
    world.manager.watcher.unwatch("w-1")
    await world.kill("w-1")  # dies while no manager runs
    restarted = world.build()
    async with anyio.create_task_group() as tg:
        await tg.start(restarted.watcher.run)
        report = await restarted.reconciler.reconcile()
        tg.cancel_scope.cancel()
    assert report.failed == ["w-1"]
    assert await world.results("w-1") == [("r-w-1", "container_killed"), DIED]


async def test_the_sweep_and_the_reconciler_finish_a_dead_worker_once(world: World) -> None:
    await world.create("w-1")
    await world.kill("w-1")
    async with anyio.create_task_group() as tg:
        tg.start_soon(world.manager.reconciler.reconcile)
        tg.start_soon(world.manager.watcher.sweep)
        tg.start_soon(world.manager.watcher.sweep)
    await world.manager.watcher.sweep()
    await world.manager.reconciler.reconcile()
    assert await world.results("w-1") == [("r-w-1", "container_killed"), DIED]


async def test_a_finish_cut_short_by_a_store_outage_does_not_report_twice(
    world: World,
) -> None:
    await world.create("w-1")
    await world.kill("w-1")
    world.registry.down = True  # the results go out, FAILED cannot be written
    with pytest.raises(ServiceUnavailable):
        await world.manager.watcher.sweep()
    assert await world.status("w-1") is WorkerStatus.STARTING
    world.registry.down = False
    await world.manager.watcher.sweep()  # the next sweep finishes the job
    assert await world.status("w-1") is WorkerStatus.FAILED
    assert await world.results("w-1") == [("r-w-1", "container_killed"), DIED]
    # A manager restarted later (the record FAILED: not judged again) adds nothing either.
    await world.build().reconciler.reconcile()
    assert await world.results("w-1") == [("r-w-1", "container_killed"), DIED]
