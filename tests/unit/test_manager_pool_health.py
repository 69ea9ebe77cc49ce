"""Warm-pool standbys that die in the pool, on the in-memory fakes: a watcher sweep drops
and replaces them (login revoked, container removed), and a claim that takes one the
sweeps have not seen yet falls back to another standby, or to a cold start, instead of
handing out a dead container."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import anyio
import pytest

from codeyard.adapters.memory.clock import ManualClock
from codeyard.adapters.memory.code_agent import ScriptedCodeAgent
from codeyard.adapters.memory.container_runtime import InMemoryContainerRuntime
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.adapters.memory.image_cache import InMemoryImageCache
from codeyard.adapters.memory.work_queue import InMemoryWorkQueue
from codeyard.adapters.memory.worker_credentials import InMemoryWorkerCredentials
from codeyard.adapters.memory.worker_registry import InMemoryWorkerRegistry
from codeyard.app.bootstrap import App
from codeyard.app.manager.config import ManagerConfig
from codeyard.app.manager.images import WorkerImages
from codeyard.app.manager.serve import Manager, build_manager
from codeyard.app.settings import Settings
from codeyard.domain.commands import CreateWorker
from codeyard.domain.container import LABEL_WORKER, ContainerInfo, ContainerState
from codeyard.domain.streams import standby_stream
from codeyard.domain.worker import WorkerSpec
from tests.unit.pool_support import LiveWorkersRuntime

pytestmark = pytest.mark.anyio


@dataclass
class Pool:
    runtime: InMemoryContainerRuntime
    logins: InMemoryWorkerCredentials
    bus: InMemoryEventBus
    manager: Manager

    async def standbys(self) -> list[ContainerInfo]:
        return await self.runtime.list()

    def replaced(self, found: str) -> float:
        value = self.manager.metrics.registry.get_sample_value(
            "codeyard_warm_pool_standbys_replaced_total", {"found": found}
        )
        return value or 0.0

    async def create(self, request_id: str) -> Mapping[str, object]:
        result = await self.manager.handler.handle(CreateWorker(request_id=request_id))
        assert isinstance(result, dict)
        return result

    async def container_of(self, worker_id: object) -> ContainerInfo:
        record = await self.manager.app.registry.get(str(worker_id))
        assert record is not None
        assert record.container_id is not None
        return await self.runtime.inspect(record.container_id)


async def pool_with(size: int) -> AsyncIterator[Pool]:
    clock = ManualClock()
    runtime = LiveWorkersRuntime(owner="me", clock=clock)
    bus = InMemoryEventBus(clock=clock)
    app = App(
        settings=Settings(),
        clock=clock,
        event_bus=bus,
        queue=InMemoryWorkQueue(clock=clock),
        registry=InMemoryWorkerRegistry(clock=clock),
        runtime=runtime,
        image_cache=InMemoryImageCache(clock=clock),
        code_agent=ScriptedCodeAgent(),
    )
    images = WorkerImages(
        InMemoryImageCache(clock=clock), base_image="b", wrapper_hash="w", ca_certs_hash=""
    )
    config = ManagerConfig(
        owner="me",
        watch_interval_s=3600,  # sweeps only when a test calls one
        warm_pool_size=size,
        warm_pool_templates=(WorkerSpec(),),
        worker_redis_acl=True,
        worker_env={"CODEYARD_REDIS_URL": "redis://localhost:6379/0"},
    )
    logins = InMemoryWorkerCredentials("me")
    manager = build_manager(app, config, images, worker_logins=logins)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.watcher.run)
        await manager.pool.fill()  # no refill loop: each test says when the pool refills
        yield Pool(runtime, logins, bus, manager)
        tg.cancel_scope.cancel()


@pytest.fixture
async def pool1() -> AsyncIterator[Pool]:
    async for pool in pool_with(1):
        yield pool


@pytest.fixture
async def pool2() -> AsyncIterator[Pool]:
    async for pool in pool_with(2):
        yield pool


@pytest.mark.parametrize("death", ["exited", "vanished"])
async def test_a_sweep_replaces_a_dead_standby_and_revokes_its_login(
    pool1: Pool, death: str
) -> None:
    (dead,) = await pool1.standbys()
    dead_slot = dead.labels[LABEL_WORKER]
    assert await pool1.logins.slots() == (dead_slot,)
    if death == "exited":
        await pool1.runtime.stop(dead.id)  # killed: exit 143, still listed
    else:
        await pool1.runtime.remove(dead.id)  # removed behind the manager's back
    await pool1.manager.watcher.sweep()
    assert pool1.manager.pool.size() == 0
    assert dead_slot not in await pool1.logins.slots()
    assert dead.id not in [c.id for c in await pool1.standbys()]
    assert not pool1.manager.pool.holds(dead.id)
    assert dead_slot not in pool1.manager.pool.slots()
    assert pool1.replaced("sweep") == 1
    await pool1.manager.pool.fill()  # what the woken refill loop does
    (fresh,) = await pool1.standbys()
    assert fresh.state is ContainerState.RUNNING
    assert await pool1.logins.slots() == (fresh.labels[LABEL_WORKER],)
    created = await pool1.create("r1")
    assert created["warm"] is True
    assert (await pool1.container_of(created["worker_id"])).id == fresh.id


async def test_a_sweep_keeps_live_standbys_missing_from_its_listing(pool2: Pool) -> None:
    before = sorted(c.id for c in await pool2.standbys())
    await pool2.manager.pool.check({})  # started after the listing: inspected, alive
    assert sorted(c.id for c in await pool2.standbys()) == before
    assert pool2.manager.pool.size() == 2
    assert len(await pool2.logins.slots()) == 2
    assert pool2.replaced("sweep") == 0


@pytest.mark.parametrize("dies", [0, 1])
async def test_a_claim_of_a_dead_standby_falls_back_to_a_live_one(pool2: Pool, dies: int) -> None:
    # No sweep between the death and the claims: only the claim can notice. Either
    # standby dies; one of the two claims takes it whichever the pool hands out first.
    dead = (await pool2.standbys())[dies]
    dead_slot = dead.labels[LABEL_WORKER]
    await pool2.runtime.stop(dead.id)
    first = await pool2.create("r1")
    second = await pool2.create("r2")
    assert first["warm"] is True  # the live standby, taken first or after the dead one
    assert second["warm"] is False  # the pool is empty then (no refill loop here)
    for created in (first, second):
        info = await pool2.container_of(created["worker_id"])
        assert info.state is ContainerState.RUNNING
        assert info.id != dead.id
    assert pool2.replaced("claim") == 1
    assert dead.id not in [c.id for c in await pool2.standbys()]
    assert dead_slot not in await pool2.logins.slots()
    assert not pool2.manager.pool.holds(dead.id)
    # The assignment published to the dead standby went with it.
    assert await pool2.bus.length(standby_stream(dead_slot)) == 0


async def test_a_claim_whose_standbys_are_all_dead_starts_cold(pool2: Pool) -> None:
    dead = await pool2.standbys()
    for info in dead:
        await pool2.runtime.stop(info.id)
    created = await pool2.create("r1")
    assert created["warm"] is False
    info = await pool2.container_of(created["worker_id"])
    assert info.state is ContainerState.RUNNING
    assert info.labels[LABEL_WORKER] == created["worker_id"]  # a cold create's own slot
    assert pool2.replaced("claim") == 2
    assert await pool2.logins.slots() == (created["worker_id"],)
    assert [c.id for c in await pool2.standbys()] == [info.id]
