"""The worker manager's commands retried after a Postgres outage (the command service
retries them, command_retry) do their work once: a create cut short at any registry write
makes one worker with one container and a live login; a delete cut short after removing
the container finishes. In-memory fakes; the registry fails on chosen writes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
from codeyard.app.command_service import CommandService, CommandServiceConfig
from codeyard.app.manager.config import ManagerConfig
from codeyard.app.manager.images import WorkerImages
from codeyard.app.manager.serve import Manager, build_manager
from codeyard.app.settings import Settings
from codeyard.domain.commands import AnyCommand, CreateWorker, DeleteWorker, Reply, command_fields
from codeyard.domain.errors import ServiceUnavailable
from codeyard.domain.streams import response_stream
from codeyard.domain.worker import WorkerRecord, WorkerStatus

pytestmark = pytest.mark.anyio


class OutageRegistry(InMemoryWorkerRegistry):
    """Fails ``outages[op]`` times with Postgres unavailable, ``after`` the write took
    effect for ``set_status`` with ``committed`` (a commit whose answer was lost)."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock=clock)
        self.outages: dict[str, int] = {}
        self.committed = False

    def _down(self, op: str) -> bool:
        left = self.outages.get(op, 0)
        if left:
            self.outages[op] = left - 1
        return bool(left)

    def _error(self, op: str) -> ServiceUnavailable:
        return ServiceUnavailable(f"postgres unavailable during {op}", service="postgres")

    async def register(self, record: WorkerRecord) -> WorkerRecord:
        if self._down("register"):
            raise self._error("register")
        return await super().register(record)

    async def set_status(self, worker_id: str, status: WorkerStatus, **kw: Any) -> WorkerRecord:
        op = f"set_status:{status.value}"
        if self.committed and self.outages.get(op):
            await super().set_status(worker_id, status, **kw)
        if self._down(op):
            raise self._error(op)
        return await super().set_status(worker_id, status, **kw)


@dataclass
class Served:
    bus: InMemoryEventBus
    registry: OutageRegistry
    runtime: InMemoryContainerRuntime
    logins: InMemoryWorkerCredentials
    manager: Manager
    config: CommandServiceConfig

    async def call(self, command: AnyCommand) -> Reply:
        await self.bus.publish(self.config.stream, command_fields(command))
        stream = response_stream(command.request_id)
        with anyio.fail_after(10):
            while not (entries := await self.bus.read(stream, after="0-0", block_s=0.05)):
                pass
        assert len(entries) == 1
        return Reply.from_fields(entries[0].fields)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    clock = ManualClock()
    registry = OutageRegistry(clock)
    runtime = InMemoryContainerRuntime(owner="me", clock=clock)
    bus = InMemoryEventBus()
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
    images = WorkerImages(
        InMemoryImageCache(clock=clock), base_image="b", wrapper_hash="w", ca_certs_hash=""
    )
    config = ManagerConfig(
        owner="me",
        watch_interval_s=3600,
        worker_redis_acl=True,
        worker_env={"CODEYARD_REDIS_URL": "redis://localhost:6379/0"},
    )
    logins = InMemoryWorkerCredentials("me")
    manager = build_manager(app, config, images, worker_logins=logins)
    tag = uuid.uuid4().hex[:8]
    service_config = CommandServiceConfig(
        stream=f"cmds:{tag}", consumer=f"c-{tag}", block_s=0.05, retry_s=0.01
    )
    service = CommandService(bus, manager.handler, service_config)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.watcher.run)
        await tg.start(service.run)
        yield Served(bus, registry, runtime, logins, manager, service_config)
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("op", "committed"),
    [("register", False), ("set_status:starting", False), ("set_status:starting", True)],
    ids=["register", "record-container", "record-container-answer-lost"],
)
async def test_a_create_retried_after_an_outage_makes_one_worker(
    served: Served, op: str, committed: bool
) -> None:
    served.registry.outages[op] = 3
    served.registry.committed = committed
    reply = await served.call(CreateWorker(request_id="r-create", worker_id="w-1"))
    assert reply.ok, reply
    # It failed three times; with the write in place the retry needs no second write.
    assert served.registry.outages[op] == (2 if committed else 0)
    containers = await served.runtime.list()
    assert len(containers) == 1  # not one per attempt
    record = await served.registry.get("w-1")
    assert record is not None
    assert record.status is WorkerStatus.STARTING
    assert record.container_id == containers[0].id
    assert await served.logins.slots() == ("w-1",)  # the container's login still valid
    assert served.manager.slots.holds("w-1")
    assert served.manager.slots.used == 1


async def test_a_delete_retried_after_an_outage_finishes(served: Served) -> None:
    assert (await served.call(CreateWorker(request_id="r-create", worker_id="w-1"))).ok
    served.registry.outages["set_status:stopped"] = 2  # after the container was removed
    reply = await served.call(DeleteWorker(request_id="r-delete", worker_id="w-1"))
    assert reply.ok, reply
    assert reply.result == {"worker_id": "w-1", "status": "stopped"}
    assert await served.runtime.list() == []
    assert not served.manager.slots.holds("w-1")
