"""A warm claim against a reconcile pass, on the in-memory fakes with a manual clock.

Between taking a standby from the pool and recording its container on the worker, nothing
in the registry names the ``pool-*`` container; a reconcile pass landing there must still
leave it alone, however old the standby is. The registry pauses at each step of that
window (and once in the middle of the reconciler's own read) so the pass runs exactly
there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

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
from codeyard.app.manager.reconcile import ReconcileReport
from codeyard.app.manager.serve import Manager, build_manager
from codeyard.app.settings import Settings
from codeyard.domain.commands import CreateWorker
from codeyard.domain.errors import ServiceUnavailable
from codeyard.domain.worker import WorkerRecord, WorkerSpec, WorkerStatus
from tests.unit.pool_support import LiveWorkersRuntime

pytestmark = pytest.mark.anyio


@dataclass
class Gate:
    paused: anyio.Event = field(default_factory=anyio.Event)
    resume: anyio.Event = field(default_factory=anyio.Event)


class PausingRegistry(InMemoryWorkerRegistry):
    """Stops once at each gated step until its gate's ``resume`` is set: ``register``,
    ``set_status`` (the write that records the container) or ``list_active`` (after
    reading, before answering: the reconciler then acts on what it read)."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock=clock)
        self.gates: dict[str, Gate] = {}

    async def _maybe_pause(self, where: str) -> None:
        gate = self.gates.pop(where, None)
        if gate is not None:
            gate.paused.set()
            await gate.resume.wait()

    def gate(self, where: str) -> Gate:
        self.gates[where] = Gate()
        return self.gates[where]

    async def register(self, record: WorkerRecord) -> WorkerRecord:
        await self._maybe_pause("register")
        return await super().register(record)

    async def set_status(self, worker_id: str, status: WorkerStatus, **kw: Any) -> WorkerRecord:
        if kw.get("container_id"):
            await self._maybe_pause("set_status")
        return await super().set_status(worker_id, status, **kw)

    async def list_active(self) -> list[WorkerRecord]:
        records = await super().list_active()
        await self._maybe_pause("list_active")
        return records


@dataclass
class Claim:
    clock: ManualClock
    registry: PausingRegistry
    runtime: InMemoryContainerRuntime
    logins: InMemoryWorkerCredentials
    manager: Manager


@pytest.fixture
async def claim() -> AsyncIterator[Claim]:
    clock = ManualClock()
    registry = PausingRegistry(clock)
    runtime = LiveWorkersRuntime(owner="me", clock=clock)
    app = App(
        settings=Settings(),
        clock=clock,
        event_bus=InMemoryEventBus(clock=clock),
        queue=InMemoryWorkQueue(clock=clock),
        registry=registry,
        runtime=runtime,
        image_cache=InMemoryImageCache(clock=clock),
        code_agent=ScriptedCodeAgent(),
    )
    images = WorkerImages(
        InMemoryImageCache(clock=clock), base_image="b", wrapper_hash="w", ca_certs_hash=""
    )
    config = ManagerConfig(
        owner="me",
        watch_interval_s=3600,
        orphan_grace_s=60,
        warm_pool_size=1,
        warm_pool_templates=(WorkerSpec(),),
        worker_redis_acl=True,
        worker_env={"CODEYARD_REDIS_URL": "redis://localhost:6379/0"},
    )
    logins = InMemoryWorkerCredentials("me")
    manager = build_manager(app, config, images, worker_logins=logins)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.watcher.run)
        await manager.reconciler.reconcile()  # the start-up pass (it drops old standbys)
        await manager.pool.fill()
        yield Claim(clock, registry, runtime, logins, manager)
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("pause_at", ["register", "set_status", "list_active"])
async def test_a_reconcile_during_a_warm_claim_keeps_the_old_standby(
    claim: Claim, pause_at: str
) -> None:
    (standby,) = await claim.runtime.list()
    (slot,) = await claim.logins.slots()
    claim.clock.advance(61)  # the standby is older than orphan_grace_s (60)
    reconciler, registry = claim.manager.reconciler, claim.registry
    created: dict[str, Any] = {}
    reports: list[ReconcileReport] = []
    finished = anyio.Event()

    async def create() -> None:
        result = await claim.manager.handler.handle(CreateWorker(request_id="r1"))
        assert isinstance(result, dict)
        created.update(result)
        finished.set()

    async def reconcile() -> None:
        reports.append(await reconciler.reconcile())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            claiming = registry.gate("set_status" if pause_at == "list_active" else pause_at)
            tg.start_soon(create)
            await claiming.paused.wait()  # the claim is in the window
            if pause_at == "list_active":
                # The pass reads the registry while the claim is in the window and acts
                # after the claim has finished: the worst order for the reconciler.
                reading = registry.gate("list_active")
                tg.start_soon(reconcile)
                await reading.paused.wait()
                claiming.resume.set()
                await finished.wait()
                reading.resume.set()
            else:
                await reconcile()
                claiming.resume.set()
    (report,) = reports
    assert standby.id not in report.removed
    assert slot not in report.revoked
    assert created["warm"] is True
    record = await registry.get(str(created["worker_id"]))
    assert record is not None
    assert record.container_id == standby.id
    assert standby.id in [c.id for c in await claim.runtime.list()]
    assert slot in await claim.logins.slots()
    # Once the claim is done the container is the worker's: the pool lets go of it.
    assert not claim.manager.pool.holds(standby.id)
    assert slot not in claim.manager.pool.slots()


async def test_a_failed_warm_claim_removes_its_standby_and_login(
    claim: Claim, monkeypatch: pytest.MonkeyPatch
) -> None:
    (standby,) = await claim.runtime.list()
    (slot,) = await claim.logins.slots()

    async def unreachable(record: WorkerRecord) -> WorkerRecord:
        raise ServiceUnavailable("registry down", service="memory")

    monkeypatch.setattr(claim.registry, "register", unreachable)
    with pytest.raises(ServiceUnavailable):
        await claim.manager.handler.handle(CreateWorker(request_id="r1"))
    # No one else knows the taken standby: the claim cleans it up, not the next pass.
    assert standby.id not in [c.id for c in await claim.runtime.list()]
    assert slot not in await claim.logins.slots()
    assert not claim.manager.pool.holds(standby.id)
    assert claim.manager.pool.slots() == frozenset()
