"""A worker event read but not written (Postgres down during ``registry.heartbeat`` or
``set_status``) is no verdict either, and is not lost (in-memory fakes, manual clock).

The follower used to log "worker event not applied" and read on, still "seeing" the
worker: a Postgres outage longer than ``heartbeat_timeout_s`` then made the first sweep
after it mark every worker UNHEALTHY and requeue its job, and a ``ready`` skipped left its
worker STARTING for good. It now stops at that entry, sees nothing meanwhile, and reads
again from it (``watcher`` module doc).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Any

import anyio
import pytest

from codeyard.adapters.memory.clock import ManualClock
from codeyard.adapters.memory.container_runtime import InMemoryContainerRuntime
from codeyard.adapters.memory.work_queue import InMemoryWorkQueue
from codeyard.adapters.memory.worker_registry import InMemoryWorkerRegistry
from codeyard.app.manager.config import ManagerConfig
from codeyard.app.manager.reconcile import Reconciler
from codeyard.app.manager.watcher import WorkerWatcher
from codeyard.domain.container import LABEL_WORKER, ContainerSpec
from codeyard.domain.errors import ServiceUnavailable
from codeyard.domain.events import AgentEvent, LifecyclePayload
from codeyard.domain.streams import worker_output_stream
from codeyard.domain.task import JobStatus
from codeyard.domain.worker import WorkerRecord, WorkerSpec, WorkerStatus
from codeyard.domain.worker_io import EVENT_FIELD, TYPE_FIELD
from tests.unit.test_manager_heartbeat_blind import ALIVE, TIMEOUT_S, FlakyBus, World

pytestmark = pytest.mark.anyio
NEW = "w-new"


class DownRegistry(InMemoryWorkerRegistry):
    """Postgres down for writes while ``down`` (reads answer); counts the failed writes."""

    down = False
    failed = 0

    def _check(self) -> None:
        if self.down:
            self.failed += 1
            raise ServiceUnavailable("postgres down", service="postgres")

    async def heartbeat(self, worker_id: str, **kw: Any) -> WorkerRecord:
        self._check()
        return await super().heartbeat(worker_id, **kw)

    async def set_status(self, worker_id: str, status: WorkerStatus, **kw: Any) -> WorkerRecord:
        self._check()
        return await super().set_status(worker_id, status, **kw)


@pytest.fixture
async def world() -> AsyncIterator[tuple[World, DownRegistry, WorkerWatcher, Reconciler]]:
    clock = ManualClock()
    registry = DownRegistry(clock=clock)
    config = ManagerConfig(owner="me", heartbeat_timeout_s=TIMEOUT_S, watch_interval_s=0.05)
    world = World(
        clock,
        FlakyBus(clock),
        registry,
        InMemoryContainerRuntime(owner="me", clock=clock),
        InMemoryWorkQueue(clock=clock),
        config,
    )
    watcher, reconciler = world.manager()
    async with anyio.create_task_group() as tg:
        await tg.start(watcher.run)
        yield world, registry, watcher, reconciler
        tg.cancel_scope.cancel()


async def _starting(world: World, worker_id: str) -> None:
    """A STARTING worker of this owner, its container running (its ``ready`` to come)."""
    info = await world.runtime.create(
        ContainerSpec(image="img", command=("sleep", "1000"), labels={LABEL_WORKER: worker_id})
    )
    await world.runtime.start(info.id)
    now = world.clock.now()
    await world.registry.register(
        WorkerRecord(worker_id=worker_id, spec=WorkerSpec(), host="me", created_at=now,
                     heartbeat_at=now)
    )  # fmt: skip
    await world.registry.set_status(worker_id, WorkerStatus.STARTING, container_id=info.id)


async def _ready(world: World, worker_id: str) -> None:
    payload = LifecyclePayload(state="ready")
    event = AgentEvent(seq=1, payload=payload, worker_id=worker_id)
    await world.bus.publish(
        worker_output_stream(worker_id),
        {EVENT_FIELD: event.model_dump_json(), TYPE_FIELD: payload.type},
    )


async def _until(condition: Callable[[], Awaitable[bool]]) -> None:
    with anyio.fail_after(5):
        while not await condition():  # noqa: ASYNC110
            await anyio.sleep(0.01)


async def test_a_postgres_outage_longer_than_the_timeout_is_no_verdict_and_loses_nothing(
    world: tuple[World, DownRegistry, WorkerWatcher, Reconciler],
) -> None:
    w, registry, watcher, reconciler = world
    await w.worker(ALIVE)
    await _starting(w, NEW)
    assert sorted((await reconciler.reconcile()).adopted) == [ALIVE, NEW]
    await w.beat(ALIVE)

    registry.down = True  # Postgres down for 45 s; Redis fine, the worker keeps beating
    await _ready(w, NEW)
    for _ in range(3):
        await w.say(ALIVE)
        await _until(partial(_failed_since, registry, registry.failed))
        w.clock.advance(15)
        await watcher.sweep()  # nothing judged meanwhile (no write tried either)
    last = w.clock.now()
    await w.say(ALIVE)
    registry.down = False
    # Right after: no verdict, whether the followers have read again yet or not.
    await watcher.sweep()
    alive = await w.record(ALIVE)
    assert alive.status is WorkerStatus.RUNNING
    job = await w.queue.get("job-" + ALIVE)
    assert job is not None
    assert job.status is JobStatus.RUNNING
    # The events read during the outage are applied once it is over: the skipped
    # ``ready`` too, and the heartbeats up to the last one.
    await _until(lambda: _status(w, NEW, WorkerStatus.RUNNING))
    await _until(lambda: _beat_at(w, ALIVE, last))
    await watcher.sweep()
    assert (await w.record(ALIVE)).status is WorkerStatus.RUNNING


async def _failed_since(registry: DownRegistry, failed: int) -> bool:
    return registry.failed > failed


async def _status(w: World, worker_id: str, status: WorkerStatus) -> bool:
    return (await w.record(worker_id)).status is status


async def _beat_at(w: World, worker_id: str, at: datetime) -> bool:
    return (await w.record(worker_id)).heartbeat_at == at
