"""WorkerManager: the CommandHandler of ``codeyard serve`` (create, delete, status, ...).

Ownership: a worker belongs to the manager whose engine runs it (``WorkerRecord.host`` =
its owner id). Any manager answers ``status``/``list``/``send`` (registry and event bus are
shared); ``delete`` and ``logs`` need the engine, so another manager forwards them to the
owner's own stream (``worker:commands:owner:{owner}``), and the owner replies.

Create is :class:`~.create.WorkerCreator` (its steps, each safe to repeat, are described
there). Commands on one worker are serialized with a per-worker lock (the command service
handles several entries at once). Every command may run again for the same request after
a store outage (the command service retries it): a delete whose container is already gone
finishes the job; the reads have no effect.
"""

from __future__ import annotations

import contextlib

import structlog
from pydantic import JsonValue

from codeyard.app.command_service import Forward
from codeyard.app.observability.metrics import ManagerMetrics
from codeyard.domain.commands import (
    AnyCommand,
    CreateWorker,
    DeleteResult,
    DeleteWorker,
    GetLogs,
    GetStatus,
    ListResult,
    ListWorkers,
    LogsResult,
    SendPrompt,
    SendResult,
)
from codeyard.domain.errors import ContainerNotFound, InvalidTransition, WorkerNotFound
from codeyard.domain.streams import worker_input_stream
from codeyard.domain.worker import WorkerRecord, WorkerStatus
from codeyard.domain.worker_io import INPUT_FIELD, WorkerInput
from codeyard.ports.clock import Clock
from codeyard.ports.container_runtime import ContainerRuntime
from codeyard.ports.credential_store import CredentialStore
from codeyard.ports.event_bus import EventBus
from codeyard.ports.worker_credentials import WorkerCredentials
from codeyard.ports.worker_registry import WorkerRegistry

from .config import ManagerConfig, WorkerImageSource
from .create import WorkerCreator, forward_to_owner
from .pool import WarmPool
from .slots import Slots
from .watcher import WorkerWatcher
from .worker_logins import WorkerLoginGrants

log = structlog.get_logger(__name__)


class WorkerManager:
    def __init__(
        self,
        *,
        config: ManagerConfig,
        bus: EventBus,
        registry: WorkerRegistry,
        runtime: ContainerRuntime,
        images: WorkerImageSource,
        clock: Clock,
        slots: Slots,
        watcher: WorkerWatcher,
        pool: WarmPool,
        metrics: ManagerMetrics | None = None,
        credentials: CredentialStore | None = None,
        worker_logins: WorkerCredentials | None = None,
    ) -> None:
        self._config = config
        self._bus = bus
        self._registry = registry
        self._runtime = runtime
        self._slots = slots
        self._watcher = watcher
        # Shared: the watcher and reconciler leave a worker alone while a command runs on it.
        self._locks = watcher.locks
        self._logins = WorkerLoginGrants(worker_logins)
        self._creator = WorkerCreator(
            config=config,
            bus=bus,
            registry=registry,
            runtime=runtime,
            images=images,
            clock=clock,
            slots=slots,
            watcher=watcher,
            pool=pool,
            metrics=metrics or ManagerMetrics(),
            credentials=credentials,
            locks=self._locks,
            logins=self._logins,
        )

    async def handle(self, command: AnyCommand) -> JsonValue | Forward:
        match command:
            case CreateWorker():
                result: JsonValue | Forward = await self.create(command)
            case DeleteWorker():
                result = await self.delete(command.worker_id)
            case GetStatus():
                result = (await self._record(command.worker_id)).model_dump(mode="json")
            case ListWorkers():
                workers = tuple(await self._registry.list_active())
                result = ListResult(workers=workers).model_dump(mode="json")
            case GetLogs():
                result = await self.logs(command.worker_id, command.tail)
            case SendPrompt():
                result = await self.send(command)
        return result

    async def create(self, command: CreateWorker) -> JsonValue | Forward:
        return await self._creator.create(command)

    async def _record(self, worker_id: str) -> WorkerRecord:
        record = await self._registry.get(worker_id)
        if record is None:
            raise WorkerNotFound("no such worker", worker_id=worker_id)
        return record

    async def delete(self, worker_id: str) -> JsonValue | Forward:
        async with self._locks.hold(worker_id):
            record = await self._record(worker_id)
            forward = forward_to_owner(record, self._config.owner)
            if forward is not None:
                return forward
            if record.status.is_active:
                self._watcher.releasing.add(worker_id)
                try:
                    if record.container_id:
                        # Gone already: an earlier attempt of this delete removed it and
                        # then lost the store (retried, command_retry) - finish the job.
                        with contextlib.suppress(ContainerNotFound):
                            await self._runtime.stop(
                                record.container_id, timeout_s=self._config.stop_timeout_s
                            )
                        await self._runtime.remove(record.container_id)
                    record = await self._terminal(worker_id, WorkerStatus.STOPPED)
                finally:
                    self._watcher.unwatch(worker_id)
                    self._watcher.releasing.discard(worker_id)
                    await self._slots.release(worker_id)
                    await self._logins.revoke(worker_id)
            return DeleteResult(worker_id=worker_id, status=record.status).model_dump(mode="json")

    async def _terminal(self, worker_id: str, status: WorkerStatus) -> WorkerRecord:
        try:
            return await self._registry.set_status(worker_id, status)
        except InvalidTransition:  # it ended by itself meanwhile (stopped/failed): keep that
            return await self._record(worker_id)

    async def logs(self, worker_id: str, tail: int) -> JsonValue | Forward:
        record = await self._record(worker_id)
        forward = forward_to_owner(record, self._config.owner)
        if forward is not None:
            return forward
        text = ""
        if record.container_id:
            text = await self._runtime.logs(record.container_id, tail=tail)
        return LogsResult(worker_id=worker_id, logs=text).model_dump(mode="json")

    async def send(self, command: SendPrompt) -> JsonValue:
        record = await self._record(command.worker_id)
        if record.status.is_terminal:
            raise InvalidTransition(
                "the worker has ended", worker_id=record.worker_id, current=record.status.value
            )
        message = WorkerInput(
            prompt=command.prompt,
            request_id=command.request_id,
            model=command.model,
            timeout_s=command.timeout_s,
            max_turns=command.max_turns,
            new_session=command.new_session,
        )
        entry_id = await self._bus.publish(
            worker_input_stream(record.worker_id), {INPUT_FIELD: message.model_dump_json()}
        )
        return SendResult(
            worker_id=record.worker_id, request_id=command.request_id, entry_id=entry_id
        ).model_dump(mode="json")
