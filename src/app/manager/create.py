"""Creating a worker (the ``create`` command of :class:`~.handler.WorkerManager`).

Step by step, each step safe to repeat (a command re-delivered after a crash, or retried
after a store outage, runs again; the worker id is the client's or derived from the
request id, so it is the same): check the spec -> take a slot (waits, QuotaExceeded) ->
the image (cache) -> register STARTING -> a warm standby container, or create one (label
worker-id) -> publish the assignment -> start -> record the container -> push the initial
prompt (once per request id) -> watch (``heartbeat_at`` refreshed if the create took
long). The per-worker lock is held throughout: the watcher's heartbeat check and the
reconciler leave a worker alone while its create runs, however long. A failure on the
way marks the worker FAILED, removes what was made and releases the slot; the client gets
the typed error. A store outage (Postgres or Redis down) is the exception: what was made
is kept for the retry (:meth:`WorkerCreator._pause`).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

import anyio
import structlog
from pydantic import JsonValue

from codeyard.app.command_retry import MAX_RETRY_S, is_store_outage
from codeyard.app.command_service import Forward
from codeyard.app.observability.metrics import ManagerMetrics, metered_ensure
from codeyard.domain.commands import CreateResult, CreateWorker, derived_worker_id
from codeyard.domain.container import LABEL_OWNER, LABEL_WORKER
from codeyard.domain.errors import CodeyardError, InvalidTransition, ServiceUnavailable
from codeyard.domain.streams import owner_commands_stream, standby_stream, worker_input_stream
from codeyard.domain.worker import WorkerRecord, WorkerStatus
from codeyard.domain.worker_io import INPUT_FIELD, WorkerAssignment, WorkerInput
from codeyard.ports.clock import Clock
from codeyard.ports.container_runtime import ContainerRuntime
from codeyard.ports.credential_store import CredentialStore
from codeyard.ports.event_bus import EventBus
from codeyard.ports.worker_registry import WorkerRegistry

from .config import ManagerConfig, WorkerImageSource
from .launch import check_spec, worker_container_spec
from .pool import Standby, StandbyDead, WarmPool
from .prompt_push import prompt_pushed
from .secrets import resolve_secrets, with_secrets
from .slots import Slots
from .watcher import WorkerWatcher
from .worker_locks import WorkerLocks
from .worker_logins import WorkerLoginGrants

log = structlog.get_logger(__name__)
#: How many standbys one create claims, each found dead, before it starts cold.
WARM_TRIES = 2
#: A create taking longer refreshes the worker's heartbeat_at (``_watch``); quicker ones
#: (a warm claim: tens of ms) skip that write.
_FRESH = timedelta(seconds=1)
#: Longest wait for deleting a failed warm claim's assignment stream.
_CLEANUP_S = 5.0


def forward_to_owner(record: WorkerRecord, owner: str) -> Forward | None:
    """Where a command on ``record`` must go when another manager (``host``) owns it."""
    if record.host and record.host != owner:
        return Forward(owner_commands_stream(record.host))
    return None


class WorkerCreator:
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
        metrics: ManagerMetrics,
        credentials: CredentialStore | None,
        locks: WorkerLocks,
        logins: WorkerLoginGrants,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._bus = bus
        self._registry = registry
        self._runtime = runtime
        self._images = images
        self._clock = clock
        self._slots = slots
        self._watcher = watcher
        self._pool = pool
        self._credentials = credentials
        self._locks = locks
        self._logins = logins
        #: Creates paused by a store outage (their slot let go) and not resumed yet, with
        #: when to forget them: past ``store_outage_s`` (and one back-off) no retry comes,
        #: so an outage without one must not keep its id here for good (``_pause``).
        self._paused: dict[str, datetime] = {}

    async def create(self, command: CreateWorker) -> JsonValue | Forward:
        started = self._metrics.now()
        spec = command.spec
        check_spec(spec, credentials=self._credentials is not None)
        worker_id = command.worker_id or derived_worker_id(command.request_id)
        async with self._locks.hold(worker_id):
            existing = await self._registry.get(worker_id)
            if existing is not None:
                forward = forward_to_owner(existing, self._config.owner)
                if forward is not None:
                    return forward
                if existing.status is not WorkerStatus.STARTING or existing.container_id:
                    if existing.status.is_active:
                        await self._push_prompt(command, worker_id)
                        if self._was_paused(worker_id):  # its slot was let go: take it back
                            self._slots.adopt(worker_id)
                        existing = await self._watch(existing)
                    self._paused.pop(worker_id, None)
                    return self._created(existing, command).model_dump(mode="json")
            await self._slots.acquire(worker_id, timeout_s=self._config.create_timeout_s)
            try:
                record, warm = await self._spawn(command, worker_id, existing)
            except BaseException as exc:
                with anyio.CancelScope(shield=True):
                    if is_store_outage(exc):
                        await self._pause(worker_id, exc)
                    else:
                        await self._abandon(worker_id, exc)
                raise
            self._paused.pop(worker_id, None)
            self._metrics.spawn_started(worker_id, warm=warm, started=started)
            await self._push_prompt(command, worker_id)
            record = await self._watch(record)
            return self._created(record, command, warm=warm).model_dump(mode="json")

    async def _watch(self, record: WorkerRecord) -> WorkerRecord:
        """Hands the worker to the watcher, still under its lock (while the lock is held
        the watcher and reconciler leave it alone). From here a started worker is judged
        by its heartbeats, and until its wrapper's first one ``heartbeat_at`` is the
        registration time: a create that took long (an image build, a resumed create)
        refreshes it, so the first sweep does not find a worker just started silent."""
        now = self._clock.now()
        if record.status is WorkerStatus.STARTING and now - record.heartbeat_at > _FRESH:
            # A sweep may have found its container ended meanwhile (FAILED): keep that.
            with contextlib.suppress(InvalidTransition):
                record = await self._registry.heartbeat(record.worker_id, at=now)
        self._watcher.watch(record)
        return record

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
        standby = self._pool.take(command.spec) if existing is None else None
        tries = 1
        while True:
            try:
                # The pool keeps holding a claimed standby until its container is on the
                # record, so no reconcile pass takes it for an orphan meanwhile (pool.py).
                async with self._pool.handover(standby):
                    return await self._launch(command, worker_id, existing, standby)
            except StandbyDead as dead:
                # A standby that died since the last sweep: handover removed it and its
                # login; take another, cold after WARM_TRIES (a CLI crashing at boot kills
                # every standby). Checked on the inspect the warm path makes anyway (the
                # record's IP), after the assignment is published: no extra engine call
                # before the worker wakes, where an inspect at take would add one to every
                # warm claim (12 ms p50) for a case the sweeps keep to one watch interval.
                await self._drop_assignment(str(dead.fields["slot"]))
                existing = await self._registry.get(worker_id)  # registered by that try
                standby = self._pool.take(command.spec) if tries < WARM_TRIES else None
                tries += 1
            except BaseException:
                # handover removed the standby and its login: its assignment stream goes too.
                if standby is not None:
                    await self._drop_assignment(standby.slot)
                raise

    async def _drop_assignment(self, slot: str) -> None:
        # No one reads it any more: a failure leaves a leftover only.
        shielded = anyio.CancelScope(shield=True)
        with shielded, anyio.move_on_after(_CLEANUP_S), contextlib.suppress(CodeyardError):
            await self._bus.delete_stream(standby_stream(slot))

    async def _launch(
        self,
        command: CreateWorker,
        worker_id: str,
        existing: WorkerRecord | None,
        standby: Standby | None,
    ) -> tuple[WorkerRecord, bool]:
        spec = command.spec
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
            await self._logins.grant(slot, worker_id)
        else:
            found = await self._runtime.list(
                {LABEL_OWNER: self._config.owner, LABEL_WORKER: worker_id}
            )
            if found:  # made by an earlier delivery of this create (its login too)
                container = found[0]
                await self._logins.grant(slot, worker_id)
            else:
                login = await self._logins.grant(slot, worker_id, issue=True)
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
        else:
            info = await self._pool.inspect_claimed(standby)  # StandbyDead: see _spawn
        record = await self._registry.set_status(
            worker_id, WorkerStatus.STARTING, container_id=container.id, ip=info.ip
        )
        log.info("worker created", worker_id=worker_id, warm=standby is not None, image=image)
        return record, standby is not None

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
            self._paused.pop(worker_id, None)
            await self._slots.release(worker_id)
            await self._logins.revoke(worker_id)

    async def _pause(self, worker_id: str, exc: ServiceUnavailable) -> None:
        """A create cut short by a store outage: the command service runs it again when
        the store is back (command_retry), so what was made is kept for that retry (the
        record STARTING without container, the container found by its worker-id label,
        the login re-bound), exactly as for a create re-delivered after a crash. Marking
        it FAILED would make the retry answer with a failed worker; removing a container
        the registry may already name (a commit whose answer was lost) would break it.
        Only the slot is freed: if no retry comes (the outage outlasted
        ``store_outage_s``), the reconciler ends the leftovers like a crash's."""
        log.warning("create paused by a store outage", worker_id=worker_id, error=str(exc))
        self._was_paused(worker_id)  # forgets the expired ones
        grace = timedelta(seconds=self._config.store_outage_s + MAX_RETRY_S)
        self._paused[worker_id] = self._clock.now() + grace
        await self._slots.release(worker_id)

    def _was_paused(self, worker_id: str) -> bool:
        """Whether ``worker_id``'s create is paused, forgetting those past their time (a
        retry later than that, e.g. a reclaimed entry, finds its slot not held: the
        reconciler adopts a running worker's slot at its next pass)."""
        now = self._clock.now()
        for paused, until in list(self._paused.items()):
            if until < now:
                del self._paused[paused]
        return worker_id in self._paused

    async def _push_prompt(self, command: CreateWorker, worker_id: str) -> None:
        """The headless prompt, once per request id (a re-delivered create skips it)."""
        if command.prompt is None:
            return
        # Not just the input stream: the worker deletes the entries it has handled.
        if await prompt_pushed(self._bus, worker_id, command.request_id):
            return
        message = WorkerInput(prompt=command.prompt, request_id=command.request_id)
        stream = worker_input_stream(worker_id)
        await self._bus.publish(stream, {INPUT_FIELD: message.model_dump_json()})
