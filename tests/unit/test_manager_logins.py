"""A dead worker's Redis login goes when the watcher finishes the worker, not at the next
reconcile pass (in-memory fakes, manual clock; the reconciler stays the backstop)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import pytest

from codeyard.adapters.memory.clock import ManualClock
from codeyard.adapters.memory.container_runtime import InMemoryContainerRuntime
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.adapters.memory.work_queue import InMemoryWorkQueue
from codeyard.adapters.memory.worker_credentials import InMemoryWorkerCredentials
from codeyard.adapters.memory.worker_registry import InMemoryWorkerRegistry
from codeyard.app.manager.config import ManagerConfig
from codeyard.app.manager.reconcile import Reconciler
from codeyard.app.manager.slots import Slots
from codeyard.app.manager.watcher import WorkerWatcher
from codeyard.domain.container import LABEL_WORKER, ContainerSpec
from codeyard.domain.worker import WorkerRecord, WorkerSpec, WorkerStatus

pytestmark = pytest.mark.anyio


@dataclass
class Deaths:
    clock: ManualClock
    registry: InMemoryWorkerRegistry
    runtime: InMemoryContainerRuntime
    logins: InMemoryWorkerCredentials
    watcher: WorkerWatcher
    reconciler: Reconciler

    async def worker(self, worker_id: str, slot: str) -> str:
        """A running worker in container labelled ``slot``, its login bound, watched."""
        info = await self.runtime.create(
            ContainerSpec(image="img", command=("sleep", "1000"), labels={LABEL_WORKER: slot})
        )
        await self.runtime.start(info.id)
        await self.logins.issue(slot)
        await self.logins.bind(slot, worker_id)
        now = self.clock.now()
        await self.registry.register(
            WorkerRecord(worker_id=worker_id, spec=WorkerSpec(), host="me", created_at=now,
                         heartbeat_at=now)
        )  # fmt: skip
        record = await self.registry.set_status(
            worker_id, WorkerStatus.RUNNING, container_id=info.id
        )
        self.watcher.watch(record)  # as the create does: no slot given
        return info.id


@pytest.fixture
async def deaths() -> AsyncIterator[Deaths]:
    clock = ManualClock()
    config = ManagerConfig(owner="me", heartbeat_timeout_s=3600, watch_interval_s=3600)
    registry = InMemoryWorkerRegistry(clock=clock)
    runtime = InMemoryContainerRuntime(owner="me", clock=clock)
    logins, slots = InMemoryWorkerCredentials("me"), Slots(8)
    watcher = WorkerWatcher(
        config=config, bus=InMemoryEventBus(clock=clock), registry=registry, runtime=runtime,
        queue=InMemoryWorkQueue(clock=clock), clock=clock, slots=slots, worker_logins=logins,
    )  # fmt: skip
    reconciler = Reconciler(
        config=config, registry=registry, runtime=runtime, clock=clock, slots=slots,
        watcher=watcher, worker_logins=logins,
    )  # fmt: skip
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        yield Deaths(clock, registry, runtime, logins, watcher, reconciler)
        tg.cancel_scope.cancel()


async def test_the_sweep_that_finds_a_worker_dead_revokes_its_login(deaths: Deaths) -> None:
    warm = await deaths.worker("w-warm", "pool-0123456789abcdef")
    cold = await deaths.worker("w-cold", "w-cold")
    await deaths.worker("w-alive", "pool-fedcba9876543210")
    await deaths.runtime.stop(warm, timeout_s=0)
    await deaths.runtime.stop(cold, timeout_s=0)
    await deaths.watcher.sweep()
    assert await deaths.logins.slots() == ("pool-fedcba9876543210",)
    for worker_id in ("w-warm", "w-cold"):
        record = await deaths.registry.get(worker_id)
        assert record is not None
        assert record.status is WorkerStatus.FAILED
    assert deaths.watcher.watched() == ["w-alive"]


async def test_a_vanished_worker_loses_the_login_a_sweep_saw_it_with(deaths: Deaths) -> None:
    warm = await deaths.worker("w-warm", "pool-0123456789abcdef")
    await deaths.watcher.sweep()  # it runs: the sweep learns its slot from the listing
    await deaths.runtime.remove(warm)
    await deaths.watcher.sweep()
    assert await deaths.logins.slots() == ()
    record = await deaths.registry.get("w-warm")
    assert record is not None
    assert (record.status, record.error) == (WorkerStatus.FAILED, "container_vanished")


async def test_a_login_the_watcher_cannot_name_is_left_to_the_reconciler(deaths: Deaths) -> None:
    warm = await deaths.worker("w-warm", "pool-0123456789abcdef")
    cold = await deaths.worker("w-cold", "w-cold")
    await deaths.runtime.remove(warm)  # gone before any sweep saw it
    await deaths.runtime.remove(cold)
    await deaths.watcher.sweep()
    # A cold create's slot is its worker id; a claimed standby's is only on its container.
    assert await deaths.logins.slots() == ("pool-0123456789abcdef",)
    report = await deaths.reconciler.reconcile()
    assert report.revoked == ["pool-0123456789abcdef"]
    assert await deaths.logins.slots() == ()
