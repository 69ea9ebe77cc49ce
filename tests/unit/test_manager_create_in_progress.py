"""A create still running is never failed under it, on the in-memory fakes with a manual clock.

Found by tests/faults/test_manager_kill9_tasks.py: a manager killed mid-create restarts on a
version that must build a new worker image, so the re-delivered create (same worker id,
resumed) runs for longer than the heartbeat timeout and than ``takeover_s +
orphan_grace_s``. Meanwhile the watcher's heartbeat check made the record UNHEALTHY (from
which it cannot be STARTING again) and the reconciler failed it ("create never finished"),
so the create failed. Here the create is held up (image build, ``runtime.create``, the
prompt push after its container is recorded) while sweeps and reconcile passes run; it must
end with the worker RUNNING.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from codeyard.adapters.memory.clock import ManualClock
from codeyard.adapters.memory.code_agent import ScriptedCodeAgent
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.adapters.memory.image_cache import InMemoryImageCache
from codeyard.adapters.memory.work_queue import InMemoryWorkQueue
from codeyard.adapters.memory.worker_credentials import InMemoryWorkerCredentials
from codeyard.adapters.memory.worker_registry import InMemoryWorkerRegistry
from codeyard.app.bootstrap import App
from codeyard.app.manager.config import ManagerConfig
from codeyard.app.manager.images import WorkerImages
from codeyard.app.manager.serve import Manager, build_manager
from codeyard.app.manager.worker_locks import WorkerLocks
from codeyard.app.settings import Settings
from codeyard.domain.commands import CreateWorker
from codeyard.domain.container import ContainerInfo, ContainerSpec, ImageRef
from codeyard.domain.events import AgentEvent, LifecyclePayload
from codeyard.domain.streams import worker_input_stream, worker_output_stream
from codeyard.domain.worker import WorkerRecord, WorkerSpec, WorkerStatus
from codeyard.domain.worker_io import EVENT_FIELD, TYPE_FIELD
from tests.unit.pool_support import LiveWorkersRuntime

pytestmark = pytest.mark.anyio
HEARTBEAT_TIMEOUT_S, TAKEOVER_S, ORPHAN_GRACE_S = 15.0, 180.0, 60.0


@dataclass
class Gate:
    """Closed: the gated step waits (``paused`` set) until ``resume`` is set."""

    closed: bool = False
    paused: anyio.Event = field(default_factory=anyio.Event)
    resume: anyio.Event = field(default_factory=anyio.Event)

    async def passage(self) -> None:
        if self.closed:
            self.closed = False
            self.paused.set()
            await self.resume.wait()


class SlowImages:
    """The worker images, with a build that takes as long as the test says."""

    def __init__(self, images: WorkerImages, gate: Gate) -> None:
        self._images, self._gate = images, gate

    async def ensure(self, spec: WorkerSpec) -> ImageRef:
        await self._gate.passage()
        return await self._images.ensure(spec)

    def key(self, spec: WorkerSpec) -> str:
        return self._images.key(spec)


class SlowRuntime(LiveWorkersRuntime):
    def __init__(self, gate: Gate, clock: ManualClock) -> None:
        super().__init__(owner="me", clock=clock)
        self._gate = gate

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        await self._gate.passage()
        return await super().create(spec)


class SlowBus(InMemoryEventBus):
    """Redis slow to take the initial prompt (the create's last step)."""

    def __init__(self, gate: Gate, clock: ManualClock) -> None:
        super().__init__(clock=clock)
        self._gate = gate

    async def publish(self, stream: str, fields: Mapping[str, str], **kw: Any) -> str:
        if stream == worker_input_stream("w-2"):
            await self._gate.passage()
        return await super().publish(stream, fields, **kw)


@dataclass
class World:
    clock: ManualClock
    registry: InMemoryWorkerRegistry
    bus: InMemoryEventBus
    manager: Manager
    gates: dict[str, Gate]

    async def status(self, worker_id: str) -> WorkerStatus:
        record = await self.registry.get(worker_id)
        assert record is not None
        return record.status

    async def judge(self, seconds: float) -> None:
        """Time passes; a watcher sweep and a reconcile pass run."""
        self.clock.advance(seconds)
        await self.manager.watcher.sweep()
        await self.manager.reconciler.reconcile()

    async def say(self, worker_id: str, state: str) -> None:
        """What the worker's wrapper says on its output stream (``ready``, ``heartbeat``)."""
        payload = LifecyclePayload(state=state, detail={"at": self.clock.now().isoformat()})
        event = AgentEvent(seq=1, payload=payload, worker_id=worker_id)
        await self.bus.publish(
            worker_output_stream(worker_id),
            {EVENT_FIELD: event.model_dump_json(), TYPE_FIELD: payload.type},
        )


@pytest.fixture
async def world() -> AsyncIterator[World]:
    clock = ManualClock()
    gates = {"build": Gate(), "container": Gate(), "prompt": Gate()}
    registry, bus = InMemoryWorkerRegistry(clock=clock), SlowBus(gates["prompt"], clock)
    app = App(
        settings=Settings(),
        clock=clock,
        event_bus=bus,
        queue=InMemoryWorkQueue(clock=clock),
        registry=registry,
        runtime=SlowRuntime(gates["container"], clock),
        image_cache=InMemoryImageCache(clock=clock),
        code_agent=ScriptedCodeAgent(),
    )
    images = WorkerImages(
        InMemoryImageCache(clock=clock), base_image="b", wrapper_hash="w", ca_certs_hash=""
    )
    config = ManagerConfig(
        owner="me",
        heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
        takeover_s=TAKEOVER_S,
        orphan_grace_s=ORPHAN_GRACE_S,
        watch_interval_s=3600,  # sweeps run when the test says
        worker_redis_acl=True,
        worker_env={"CODEYARD_REDIS_URL": "redis://localhost:6379/0"},
    )
    logins = InMemoryWorkerCredentials("me")
    manager = build_manager(app, config, SlowImages(images, gates["build"]), worker_logins=logins)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.watcher.run)
        yield World(clock, registry, bus, manager, gates)
        tg.cancel_scope.cancel()


async def _held_create(world: World, gate: Gate, worker_id: str) -> dict[str, Any]:
    """Runs a create of ``worker_id`` held at ``gate`` while time passes past the heartbeat
    timeout and past ``takeover_s + orphan_grace_s`` from the record's creation, with a
    sweep and a reconcile pass at each step; returns the create's answer."""
    answers: list[dict[str, Any]] = []

    async def create() -> None:
        result = await world.manager.handler.handle(
            CreateWorker(request_id="r-create", worker_id=worker_id, prompt="hi")
        )
        assert isinstance(result, dict)
        answers.append(result)

    gate.closed = True
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(create)
            await gate.paused.wait()
            for _ in range(3):  # 3 x 100 s: > 15 s and > 180 + 60 s
                await world.judge(100)
                assert await world.status(worker_id) is WorkerStatus.STARTING
            gate.resume.set()
    (answer,) = answers
    return answer


async def _comes_up(world: World, worker_id: str) -> None:
    """Right after its create, the worker is judged from its start: not dead at once; its
    wrapper's ``ready`` makes it RUNNING."""
    await world.judge(HEARTBEAT_TIMEOUT_S - 1)
    assert await world.status(worker_id) is WorkerStatus.STARTING
    await world.say(worker_id, "ready")
    with anyio.fail_after(5):
        while await world.status(worker_id) is not WorkerStatus.RUNNING:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    assert world.manager.watcher.watched() == [worker_id]


async def test_a_resumed_create_with_a_long_image_build_ends_running(world: World) -> None:
    # The crashed manager registered the worker, then died; the restarted one must build a
    # new image for the re-delivered create.
    now = world.clock.now()
    await world.registry.register(
        WorkerRecord(worker_id="w-1", spec=WorkerSpec(), host="me", created_at=now,
                     heartbeat_at=now)
    )  # fmt: skip
    await world.manager.reconciler.reconcile()  # the restarted manager's start-up pass
    # Until the re-delivery (after takeover_s) the record has no container: it is the
    # reconciler's to judge (after takeover_s + orphan_grace_s), not by heartbeats.
    await world.judge(TAKEOVER_S - 1)
    assert await world.status("w-1") is WorkerStatus.STARTING
    answer = await _held_create(world, world.gates["build"], "w-1")
    assert (answer["worker_id"], answer["status"]) == ("w-1", "starting")
    await _comes_up(world, "w-1")


@pytest.mark.parametrize("held_at", ["container", "prompt"])
async def test_a_create_held_up_ends_running(world: World, held_at: str) -> None:
    answer = await _held_create(world, world.gates[held_at], "w-2")
    assert (answer["worker_id"], answer["status"]) == ("w-2", "starting")
    await _comes_up(world, "w-2")


async def test_a_worker_that_started_is_still_judged_by_its_heartbeats(world: World) -> None:
    await world.manager.handler.handle(CreateWorker(request_id="r-3", worker_id="w-3"))
    await world.say("w-3", "ready")
    with anyio.fail_after(5):
        while await world.status("w-3") is not WorkerStatus.RUNNING:  # noqa: ASYNC110
            await anyio.sleep(0.01)
    await world.judge(HEARTBEAT_TIMEOUT_S + 1)
    record = await world.registry.get("w-3")
    assert record is not None
    assert (record.status, record.error) == (WorkerStatus.UNHEALTHY, "heartbeat timeout")


async def test_try_hold_gives_way_to_a_command_and_forgets_its_lock() -> None:
    locks = WorkerLocks()
    holding, done = anyio.Event(), anyio.Event()

    async def command() -> None:
        async with locks.hold("w"):
            holding.set()
            await done.wait()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(command)
            await holding.wait()
            assert locks.held("w")
            async with locks.try_hold("w") as free:
                assert not free
            done.set()
    assert not locks.held("w")
    async with locks.try_hold("w") as free:
        assert free
        assert locks.held("w")
    assert not locks.held("w")
    assert locks._locks == {}  # a lock lives only while held or waited for
