"""WorkerManager: the CommandHandler of ``codeyard serve`` (create, delete, status, ...).

Ownership: a worker belongs to the manager whose engine runs it (``WorkerRecord.host`` =
its owner id). Any manager answers ``status``/``list``/``send`` (registry and event bus are
shared); ``delete`` and ``logs`` need the engine, so another manager forwards them to the
owner's own stream (``worker:commands:owner:{owner}``), and the owner replies.

Create, step by step, each step safe to repeat (a command re-delivered after a crash runs
again; the worker id is the client's or derived from the request id, so it is the same):
check the spec -> take a slot (waits, QuotaExceeded) -> the image (cache) -> register
STARTING -> a warm standby container, or create one (label worker-id) -> publish the
assignment -> start -> record the container -> push the initial prompt (once per request
id) -> watch. A failure on the way marks the worker FAILED, removes what was made and
releases the slot; the client gets the typed error.

Commands on one worker are serialized with a per-worker lock (the command service handles
several entries at once).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import structlog
from pydantic import JsonValue

from codeyard.app.command_service import Forward
from codeyard.app.observability.metrics import ManagerMetrics, metered_ensure
from codeyard.domain.commands import (
    AnyCommand,
    CreateResult,
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
    derived_worker_id,
)
from codeyard.domain.container import LABEL_OWNER, LABEL_WORKER
from codeyard.domain.errors import CodeyardError, InvalidTransition, WorkerNotFound
from codeyard.domain.streams import owner_commands_stream, standby_stream, worker_input_stream
from codeyard.domain.worker import WorkerRecord, WorkerStatus
from codeyard.domain.worker_access import WorkerLogin
from codeyard.domain.worker_io import INPUT_FIELD, WorkerAssignment, WorkerInput
from codeyard.ports.clock import Clock
from codeyard.ports.container_runtime import ContainerRuntime
from codeyard.ports.credential_store import CredentialStore
from codeyard.ports.event_bus import EventBus
from codeyard.ports.worker_credentials import WorkerCredentials
from codeyard.ports.worker_registry import WorkerRegistry

from .config import ManagerConfig, WorkerImageSource
from .launch import check_spec, worker_container_spec
from .pool import WarmPool
from .secrets import resolve_secrets, with_secrets
from .slots import Slots
from .watcher import WorkerWatcher

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
        self._metrics = metrics or ManagerMetrics()
        self._bus = bus
        self._registry = registry
        self._runtime = runtime
        self._images = images
        self._clock = clock
        self._slots = slots
        self._watcher = watcher
        self._pool = pool
        self._credentials = credentials
        self._locks: dict[str, anyio.Lock] = {}
        self._logins = worker_logins
        #: The slot (login) of each worker this process made; after a restart the
        #: reconciler removes the logins of workers that are gone.
        self._login_slots: dict[str, str] = {}

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

    @asynccontextmanager
    async def _lock(self, worker_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(worker_id, anyio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(worker_id, None)

    async def _record(self, worker_id: str) -> WorkerRecord:
        record = await self._registry.get(worker_id)
        if record is None:
            raise WorkerNotFound("no such worker", worker_id=worker_id)
        return record

    def _elsewhere(self, record: WorkerRecord) -> Forward | None:
        if record.host and record.host != self._config.owner:
            return Forward(owner_commands_stream(record.host))
        return None

    # --- create --------------------------------------------------------------------------

    async def create(self, command: CreateWorker) -> JsonValue | Forward:
        started = self._metrics.now()
        spec = command.spec
        check_spec(spec, credentials=self._credentials is not None)
        worker_id = command.worker_id or derived_worker_id(command.request_id)
        async with self._lock(worker_id):
            existing = await self._registry.get(worker_id)
            if existing is not None:
                forward = self._elsewhere(existing)
                if forward is not None:
                    return forward
                if existing.status is not WorkerStatus.STARTING or existing.container_id:
                    if existing.status.is_active:
                        await self._push_prompt(command, worker_id)
                        self._watcher.watch(existing)
                    return self._created(existing, command).model_dump(mode="json")
            await self._slots.acquire(worker_id, timeout_s=self._config.create_timeout_s)
            try:
                record, warm = await self._spawn(command, worker_id, existing)
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    await self._abandon(worker_id, exc)
                raise
            self._metrics.spawn_started(worker_id, warm=warm, started=started)
            await self._push_prompt(command, worker_id)
            self._watcher.watch(record)
            return self._created(record, command, warm=warm).model_dump(mode="json")

    def _created(
        self, record: WorkerRecord, command: CreateWorker, *, warm: bool = False
    ) -> CreateResult:
        return CreateResult(
            worker_id=record.worker_id,
            status=record.status,
            prompt_request_id=command.request_id if command.prompt else None,
            warm=warm,
        )

    async def _spawn(
        self, command: CreateWorker, worker_id: str, existing: WorkerRecord | None
    ) -> tuple[WorkerRecord, bool]:
        spec = command.spec
        standby = self._pool.take(spec) if existing is None else None
        if standby is not None:
            image, image_hash, slot = standby.image, "", standby.slot
        else:
            ref = await metered_ensure(self._images, spec, self._metrics)
            image, image_hash, slot = ref.tag, ref.content_hash, worker_id
        if existing is None:
            now = self._clock.now()
            await self._registry.register(
                WorkerRecord(
                    worker_id=worker_id,
                    spec=spec,
                    host=self._config.owner,
                    image=image,
                    created_at=now,
                    heartbeat_at=now,
                )
            )
        assignment = WorkerAssignment(
            worker_id=worker_id,
            instructions=spec.instructions,
            allowed_commands=spec.allowed_commands,
            env=spec.env,
        )
        if standby is not None:
            container = standby.container
            await self._grant(slot, worker_id)
        else:
            found = await self._runtime.list(
                {LABEL_OWNER: self._config.owner, LABEL_WORKER: worker_id}
            )
            if found:  # made by an earlier delivery of this create (its login too)
                container = found[0]
                await self._grant(slot, worker_id)
            else:
                login = await self._grant(slot, worker_id, issue=True)
                container_spec = worker_container_spec(
                    spec,
                    image=image,
                    image_hash=image_hash,
                    slot=slot,
                    config=self._config,
                    credentials=self._credentials is not None,
                    login=login,
                )
                if spec.secrets and self._credentials is not None:  # cold creates only
                    secret_env = await resolve_secrets(self._credentials, spec)
                    container_spec = with_secrets(container_spec, secret_env)
                container = await self._runtime.create(container_spec)
        # Before start: the standby wrapper reads its stream from the beginning.
        await self._bus.publish(standby_stream(slot), {INPUT_FIELD: assignment.model_dump_json()})
        if standby is None:
            await self._runtime.start(container.id)
        info = await self._runtime.inspect(container.id)
        record = await self._registry.set_status(
            worker_id, WorkerStatus.STARTING, container_id=container.id, ip=info.ip
        )
        log.info("worker created", worker_id=worker_id, warm=standby is not None, image=image)
        return record, standby is not None

    async def _grant(self, slot: str, worker_id: str, *, issue: bool = False) -> WorkerLogin | None:
        """With per-worker Redis logins: ``slot``'s login (a new one with ``issue``), bound
        to the worker's streams before it reads its assignment."""
        if self._logins is None:
            return None
        self._login_slots[worker_id] = slot
        login = await self._logins.issue(slot) if issue else None
        await self._logins.bind(slot, worker_id)
        return login

    async def _revoke(self, worker_id: str) -> None:
        if self._logins is None:
            return
        slot = self._login_slots.pop(worker_id, worker_id)
        try:
            await self._logins.revoke(slot)
        except CodeyardError as exc:  # the reconciler retries
            log.warning("worker login not revoked", worker_id=worker_id, error=str(exc))

    async def _abandon(self, worker_id: str, exc: BaseException) -> None:
        """Undo a failed create: FAILED in the registry, container removed, slot freed."""
        error = exc.message if isinstance(exc, CodeyardError) else type(exc).__name__
        try:
            record = await self._registry.get(worker_id)
            if record is not None and not record.status.is_terminal:
                await self._registry.set_status(worker_id, WorkerStatus.FAILED, error=error)
            for info in await self._runtime.list(
                {LABEL_OWNER: self._config.owner, LABEL_WORKER: worker_id}
            ):
                await self._runtime.remove(info.id)
            if record is not None and record.container_id:
                await self._runtime.remove(record.container_id)
        except CodeyardError as cleanup:
            log.warning("failed create not cleaned up", worker_id=worker_id, error=str(cleanup))
        finally:
            await self._slots.release(worker_id)
            await self._revoke(worker_id)

    async def _push_prompt(self, command: CreateWorker, worker_id: str) -> None:
        """The headless prompt, once per request id (a re-delivered create skips it)."""
        if command.prompt is None:
            return
        stream = worker_input_stream(worker_id)
        after = "0-0"
        while entries := await self._bus.read(stream, after=after, count=100):
            for entry in entries:
                if f'"request_id":"{command.request_id}"' in entry.fields.get(INPUT_FIELD, ""):
                    return
            after = entries[-1].id
        message = WorkerInput(prompt=command.prompt, request_id=command.request_id)
        await self._bus.publish(stream, {INPUT_FIELD: message.model_dump_json()})

    # --- the others ----------------------------------------------------------------------

    async def delete(self, worker_id: str) -> JsonValue | Forward:
        async with self._lock(worker_id):
            record = await self._record(worker_id)
            forward = self._elsewhere(record)
            if forward is not None:
                return forward
            if record.status.is_active:
                self._watcher.releasing.add(worker_id)
                try:
                    if record.container_id:
                        await self._runtime.stop(
                            record.container_id, timeout_s=self._config.stop_timeout_s
                        )
                        await self._runtime.remove(record.container_id)
                    record = await self._terminal(worker_id, WorkerStatus.STOPPED)
                finally:
                    self._watcher.unwatch(worker_id)
                    self._watcher.releasing.discard(worker_id)
                    await self._slots.release(worker_id)
                    await self._revoke(worker_id)
            return DeleteResult(worker_id=worker_id, status=record.status).model_dump(mode="json")

    async def _terminal(self, worker_id: str, status: WorkerStatus) -> WorkerRecord:
        try:
            return await self._registry.set_status(worker_id, status)
        except InvalidTransition:  # it ended by itself meanwhile (stopped/failed): keep that
            return await self._record(worker_id)

    async def logs(self, worker_id: str, tail: int) -> JsonValue | Forward:
        record = await self._record(worker_id)
        forward = self._elsewhere(record)
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
