"""WorkerWatcher: turns what workers say and what their containers do into registry state.

Per watched worker, a follower task reads ``worker:{id}:output`` from the start: the
worker's lifecycle events go to the registry (:mod:`.lifecycle`: ``ready``, ``heartbeat``,
``stopped``); what it reads of runs goes into a :class:`~.runs.RunBook`, so a death reads
only the rest of the stream.

One sweep every ``watch_interval_s`` (one container list for all workers, not a blocking
``wait`` per container: those would each hold a Docker thread):
- a watched worker whose container is gone or has exited is finished under its lock
  (``try_hold``: the reconciler finishes dead workers too; a command on it decides): a
  failed result for each run left without one (reason from the exit code: OOM, 143,
  137, other), unless it exited 0 (the wrapper's clean stop -> STOPPED) its own
  ``run_id: null`` one, FAILED (``deaths.report_death``, once even when run again). Its
  container is removed, its slot released;
- active workers of this owner silent for ``heartbeat_timeout_s`` become UNHEALTHY, and
  the queue job they hold (``task_id``) is failed so it is retried elsewhere. Not a worker
  a command is working on (its lock held: a resumed create building an image), nor one
  not started (``deaths.silent``). **Only heartbeats the manager could read count**: a
  worker is judged only once its follower has been reading its output stream for a whole
  timeout (``_Watch.seeing_since``: when the watch began, or its first read attempt after
  a failed one; none while reads fail), so silence is ``max(heartbeat_at, seeing_since)``
  older than the timeout. Redis unreachable for longer (workers ride that out, buffering
  their events: :mod:`codeyard.app.worker_outage`), or a manager (re)started after the
  worker's last heartbeat it has, is no verdict on the worker: judging by heartbeats it
  could not read marked every worker UNHEALTHY and requeued every job at the first sweep
  after. A heartbeat read but not written (the registry's store down) counts as unread:
  the follower stops there, clears ``seeing_since`` and reads again from that entry after
  ``watch_interval_s``, so a skipped ``ready`` is applied later, not lost. A worker not
  watched is not judged (nobody reads its heartbeats; the reconciler adopts or finishes
  it);
- the listing goes to ``on_listing`` (the warm pool replaces its dead standbys).

With per-worker Redis logins (``worker_logins``) finishing a worker first revokes its login
(its slot: see ``launch.login_slot``; sweeps remember it from the listing), so a dead
worker's login stops working at once, not at the next reconcile pass (the backstop).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from codeyard.app.command_retry import is_store_outage
from codeyard.app.observability.metrics import ManagerMetrics
from codeyard.domain.container import LABEL_OWNER, LABEL_WORKER, ContainerInfo, ContainerState
from codeyard.domain.errors import CodeyardError
from codeyard.domain.events import AgentEvent
from codeyard.domain.streams import StreamMessage, worker_output_stream
from codeyard.domain.worker import WorkerRecord, WorkerStatus
from codeyard.domain.worker_io import EVENT_FIELD
from codeyard.ports.clock import Clock
from codeyard.ports.container_runtime import ContainerRuntime
from codeyard.ports.event_bus import EventBus
from codeyard.ports.work_queue import WorkQueue
from codeyard.ports.worker_credentials import WorkerCredentials
from codeyard.ports.worker_registry import WorkerRegistry

from .config import ManagerConfig
from .deaths import report_death, requeue, silent
from .launch import death_reason, login_slot
from .lifecycle import apply_lifecycle
from .runs import RunBook
from .slots import Slots
from .worker_locks import WorkerLocks

log = structlog.get_logger(__name__)
_ENDED = (ContainerState.EXITED, ContainerState.DEAD)


@dataclass
class _Watch:
    record: WorkerRecord
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    #: What the follower read of the output stream (fed by ``_follow`` only).
    book: RunBook = field(default_factory=RunBook)
    #: The worker's login slot (its container's LABEL_WORKER), once known.
    slot: str | None = None
    #: Since when the follower has been reading the output stream without a failure (set
    #: by ``watch``, cleared at a failed read, set again at the next attempt): only
    #: silence since then is the worker's (module docstring).
    seeing_since: datetime | None = None


class WorkerWatcher:
    def __init__(
        self,
        *,
        config: ManagerConfig,
        bus: EventBus,
        registry: WorkerRegistry,
        runtime: ContainerRuntime,
        queue: WorkQueue,
        clock: Clock,
        slots: Slots,
        metrics: ManagerMetrics | None = None,
        worker_logins: WorkerCredentials | None = None,
        locks: WorkerLocks | None = None,
    ) -> None:
        self._config = config
        #: The handler's per-worker command locks: a worker is judged only under its own.
        self.locks = locks or WorkerLocks()
        self._logins = worker_logins
        self._metrics = metrics or ManagerMetrics()
        self._bus = bus
        self._registry = registry
        self._runtime = runtime
        self._queue = queue
        self._clock = clock
        self._slots = slots
        self._watches: dict[str, _Watch] = {}
        #: Workers being deleted: their container's end is expected, not a death.
        self.releasing: set[str] = set()
        #: Given each sweep's listing (this owner's containers by id): the warm pool
        #: checks its standbys there (``WarmPool.check``), no listing of its own.
        self.on_listing: Callable[[Mapping[str, ContainerInfo]], Awaitable[None]] | None = None
        self._tg: TaskGroup | None = None

    def watched(self) -> list[str]:
        return sorted(self._watches)

    def state_counts(self) -> dict[str, int]:
        """Watched workers by status: sync, for metrics scrapes (they run on another
        thread, hence the copy: a dict copy is atomic, iterating a live one is not)."""
        counts: dict[str, int] = {}
        for watch in self._watches.copy().values():
            state = watch.record.status.value
            counts[state] = counts.get(state, 0) + 1
        return counts

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            while True:
                await anyio.sleep(self._config.watch_interval_s)
                try:
                    await self.sweep()
                except CodeyardError as exc:
                    log.warning("worker sweep failed", error=str(exc))

    def watch(self, record: WorkerRecord, *, slot: str | None = None) -> None:
        """Follow ``record``'s worker (idempotent); its container id must be set. ``slot``:
        its login's slot when known (else the sweeps learn it)."""
        if self._tg is None:
            msg = "WorkerWatcher.run must be started first"
            raise RuntimeError(msg)
        current = self._watches.get(record.worker_id)
        if current is not None:
            current.record = record
            current.slot = slot or current.slot
            return
        watch = _Watch(record, slot=slot, seeing_since=self._clock.now())
        self._watches[record.worker_id] = watch
        self._tg.start_soon(self._follow, watch)

    def unwatch(self, worker_id: str) -> None:
        watch = self._watches.pop(worker_id, None)
        if watch is not None:
            watch.scope.cancel()
        self._metrics.spawn_dropped(worker_id)

    # --- output stream -------------------------------------------------------------------

    async def _follow(self, watch: _Watch) -> None:
        worker_id = watch.record.worker_id
        stream = worker_output_stream(worker_id)
        after = "0-0"
        # This task's own context (a copy of the creating command's: cleared, so its
        # request id does not stick): every log line of the follower names its worker.
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(worker_id=worker_id)
        if watch.record.task_id is not None:
            structlog.contextvars.bind_contextvars(task_id=watch.record.task_id)
        with watch.scope:
            while True:
                if watch.seeing_since is None:
                    watch.seeing_since = self._clock.now()
                try:
                    entries = await self._bus.read(stream, after=after, count=100, block_s=1.0)
                except CodeyardError as exc:
                    watch.seeing_since = None  # heartbeats may be unwritten too: no verdicts
                    log.warning("output stream unreadable", worker_id=worker_id, error=str(exc))
                    await anyio.sleep(self._config.watch_interval_s)
                    continue
                for entry in entries:
                    if not await self._apply(watch, entry):
                        # Read again from this entry (lifecycle writes are idempotent, old
                        # heartbeats are ignored by ``at``); no verdicts meanwhile: the
                        # heartbeats it carries are not in the registry.
                        watch.seeing_since = None
                        await anyio.sleep(self._config.watch_interval_s)
                        break
                    after = entry.id

    async def _apply(self, watch: _Watch, entry: StreamMessage) -> bool:
        """Feed one output entry to ``watch``; False when a store outage kept its lifecycle
        event from the registry (module docstring: a failed apply is like a failed read).
        Any other failure is logged and the entry passed: retrying it would not help, and
        a follower stuck on it would leave its worker unjudged for good."""
        try:
            event = AgentEvent.parse(entry.fields.get(EVENT_FIELD, ""))
        except CodeyardError:
            return True  # not ours to judge; the client sees it too
        worker_id = watch.record.worker_id
        watch.book.feed(entry.id, event)  # feeding an entry again changes nothing
        try:
            watch.record = await apply_lifecycle(
                watch.record, event, registry=self._registry, metrics=self._metrics
            )
        except CodeyardError as exc:
            log.warning("worker event not applied", worker_id=worker_id, error=str(exc))
            return not is_store_outage(exc)
        return True

    # --- sweep ---------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Check every watched container once, then the heartbeats."""
        containers = {c.id: c for c in await self._runtime.list({LABEL_OWNER: self._config.owner})}
        for worker_id, watch in list(self._watches.items()):
            if worker_id in self.releasing:
                continue
            container_id = watch.record.container_id
            info = containers.get(container_id) if container_id else None
            if info is None and container_id is not None:
                with contextlib.suppress(CodeyardError):
                    info = await self._runtime.inspect(container_id)
            if info is not None:
                watch.slot = info.labels.get(LABEL_WORKER) or watch.slot
            if info is None or info.state in _ENDED:
                async with self.locks.try_hold(worker_id) as free:
                    # Not free: a command on it runs (a delete): the next sweep looks again.
                    # Under the lock, still ours: not finished (reconciler) nor deleted.
                    if free and self._watches.get(worker_id) is watch:
                        await self.finish(watch.record, info)
        if self.on_listing is not None:
            await self.on_listing(containers)
        await self._check_heartbeats()

    async def finish(self, record: WorkerRecord, info: ContainerInfo | None) -> None:
        """A worker's container ended (or vanished): report, record, clean up. Called
        under the worker's lock (the sweep's, the reconciler's): one finish at a time."""
        worker_id = record.worker_id
        watch = self._watches.get(worker_id)
        await self._revoke_login(worker_id, info, watch)
        current = await self._registry.get(worker_id)
        clean = info is not None and info.exit_code == 0
        # STOPPED: deleted, or the wrapper's clean stop, which finished its runs itself.
        if current is not None and current.status is not WorkerStatus.STOPPED:
            await report_death(
                current,
                info,
                watch.book.copy() if watch is not None else RunBook(),
                bus=self._bus,
                registry=self._registry,
                queue=self._queue,
                output_maxlen=self._config.output_maxlen,
            )
        log.info("worker ended", worker_id=worker_id, reason=death_reason(info), clean=clean)
        if info is not None:
            await self._runtime.remove(info.id)
        self.unwatch(worker_id)
        await self._slots.release(worker_id)

    async def _revoke_login(
        self, worker_id: str, info: ContainerInfo | None, watch: _Watch | None
    ) -> None:
        """First thing at a death, so no later step failing keeps the login alive."""
        slot = login_slot(worker_id, info, watch.slot if watch is not None else None)
        if self._logins is None or slot is None:
            return
        try:
            await self._logins.revoke(slot)
        except CodeyardError as exc:  # the reconciler retries
            log.warning("dead worker's login not revoked", worker_id=worker_id, error=str(exc))

    async def _check_heartbeats(self) -> None:
        owner = self._config.owner
        limit = self._clock.now() - timedelta(seconds=self._config.heartbeat_timeout_s)
        for stale in await self._registry.stale(limit):
            seeing = self._seeing_since(stale.worker_id)
            if stale.worker_id in self.releasing or not silent(
                stale, owner=owner, before=limit, seeing_since=seeing
            ):
                continue
            async with self.locks.try_hold(stale.worker_id) as free:
                if not free:
                    continue  # a command on it is running: it decides (module docstring)
                # Read again under the lock: a create may have run since ``stale``.
                record = await self._registry.get(stale.worker_id)
                seeing = self._seeing_since(stale.worker_id)
                if record is None or not silent(
                    record, owner=owner, before=limit, seeing_since=seeing
                ):
                    continue
                log.warning("worker unhealthy: no heartbeat", worker_id=record.worker_id)
                unhealthy = await self._registry.set_status(
                    record.worker_id, WorkerStatus.UNHEALTHY, error="heartbeat timeout"
                )
                if (watch := self._watches.get(record.worker_id)) is not None:
                    watch.record = unhealthy  # codeyard_workers reads the watched records
                await requeue(self._queue, record, "worker unhealthy: heartbeat timeout")

    def _seeing_since(self, worker_id: str) -> datetime | None:
        watch = self._watches.get(worker_id)
        return watch.seeing_since if watch is not None else None
