"""Reconciler: the registry's desired state against the containers this owner really has.

Runs at start-up (before commands are served) and then every ``reconcile_interval_s``.
Only this owner's records (``host``) and containers (label ``dev.codeyard.owner``) count:
another manager's workers run on another engine and are never touched.

- A live worker whose container runs is adopted: watched again, its slot counted.
- A live worker whose container has ended or vanished is finished like any death (failed
  result on its output stream, FAILED, container removed).
- A STARTING worker with no container yet is a create cut short; the re-delivered create
  command finishes it. That re-delivery comes only after ``takeover_s`` (the create is
  pending on the dead consumer until then), so such a worker is left alone for
  ``takeover_s + orphan_grace_s``, then failed: failing it earlier made the re-delivered
  create answer with a failed worker that never ran (found by tests/faults
  test_manager_kill9.py).
- A worker a command of this process is working on (its lock held: a re-delivered create
  building a new image for longer than that) is that command's: counted live, its
  containers referenced, nothing decided (tests/faults test_manager_kill9_tasks.py). The
  pass judges each worker under its lock (``WorkerLocks.try_hold``), so no command
  starts on it meanwhile.
- A container no live worker refers to is an orphan: removed once older than
  ``orphan_grace_s`` (a create may be between ``create`` and recording the id). Standby
  containers of an earlier run of this manager are removed at once (not pool members now).
  A container still referenced by a live record, or held by the warm pool, is never
  removed. The pool's holdings are read *before* the registry: a claimed standby stays
  held until its container is on the worker's record (``WarmPool.handover``), so a pass
  sees it held, or (read later) on the record: a claim finishing mid-pass cannot slip
  between the two reads.
- With per-worker Redis logins: a login whose slot has no container of this owner, no
  live worker (a create between registering and its container) and no warm-pool standby
  holding it is revoked. Logins, then pool slots, then containers and records are read in
  that order: a login listed was issued before, so its slot shows in one of the later reads
  (the pool adds a slot before issuing and keeps it until a claim's handover; a claimed
  standby's container exists before its claim; a cold create registers before issuing).
  Dead workers' logins are revoked by the watcher when it finishes them; this pass is the
  backstop (a revoke that failed, a worker whose slot the watcher never learned).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from codeyard.domain.container import (
    LABEL_CREATED,
    LABEL_OWNER,
    LABEL_WORKER,
    ContainerInfo,
    ContainerState,
)
from codeyard.domain.worker import WorkerRecord, WorkerStatus
from codeyard.ports.clock import Clock
from codeyard.ports.container_runtime import ContainerRuntime
from codeyard.ports.worker_credentials import WorkerCredentials
from codeyard.ports.worker_registry import WorkerRegistry

from .config import ManagerConfig
from .launch import LABEL_ROLE, ROLE_STANDBY
from .pool import WarmPool
from .slots import Slots
from .watcher import WorkerWatcher

log = structlog.get_logger(__name__)
_ENDED = (ContainerState.EXITED, ContainerState.DEAD)


@dataclass
class ReconcileReport:
    adopted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: Slots whose Redis login was revoked.
    revoked: list[str] = field(default_factory=list)


class Reconciler:
    def __init__(
        self,
        *,
        config: ManagerConfig,
        registry: WorkerRegistry,
        runtime: ContainerRuntime,
        clock: Clock,
        slots: Slots,
        watcher: WorkerWatcher,
        pool: WarmPool | None = None,
        worker_logins: WorkerCredentials | None = None,
    ) -> None:
        self._config = config
        self._registry = registry
        self._runtime = runtime
        self._clock = clock
        self._slots = slots
        self._watcher = watcher
        self._pool = pool
        self._logins = worker_logins
        self._first = True

    async def reconcile(self) -> ReconcileReport:
        report = ReconcileReport()
        owner = self._config.owner
        logins = await self._logins.slots() if self._logins is not None else ()
        live: set[str] = set(self._pool.slots()) if self._pool is not None else set()
        # Before the registry read (module docstring): held now, or on a record read later.
        pooled = self._pool.held() if self._pool is not None else frozenset()
        containers = await self._runtime.list({LABEL_OWNER: owner})
        by_id = {c.id: c for c in containers}
        referenced: set[str] = set()
        now = self._clock.now()
        for record in await self._registry.list_active():
            if record.host != owner:
                continue
            live.add(record.worker_id)
            if record.container_id is None:
                # A create cut short (or running); its container, if any, carries the
                # worker id label.
                made = [c for c in containers if c.labels.get(LABEL_WORKER) == record.worker_id]
                referenced.update(c.id for c in made)
            else:
                referenced.add(record.container_id)
            async with self._watcher.locks.try_hold(record.worker_id) as free:
                if free:  # else a command on it is running: it decides (module docstring)
                    await self._judge(record, by_id, now, report)
        for info in containers:
            if info.id in referenced or info.id in pooled or self._in_pool(info):
                continue
            if self._first and info.labels.get(LABEL_ROLE) == ROLE_STANDBY:
                stale = True  # a standby of an earlier run: not in our pool
            else:
                stale = self._age_s(info, now) > self._config.orphan_grace_s
            if stale:
                await self._runtime.remove(info.id)
                report.removed.append(info.id)
        live.update(
            c.labels.get(LABEL_WORKER, "") for c in containers if c.id not in report.removed
        )
        await self._revoke_logins(logins, live, report)
        self._first = False
        if report.adopted or report.failed or report.removed or report.revoked:
            log.info(
                "reconciled",
                adopted=report.adopted,
                failed=report.failed,
                removed=report.removed,
                revoked=report.revoked,
            )
        return report

    async def _judge(
        self,
        record: WorkerRecord,
        by_id: dict[str, ContainerInfo],
        now: datetime,
        report: ReconcileReport,
    ) -> None:
        """One live worker of this owner, under its lock."""
        worker_id = record.worker_id
        if record.container_id is None:
            unfinished_grace_s = self._config.takeover_s + self._config.orphan_grace_s
            if (now - record.created_at).total_seconds() <= unfinished_grace_s:
                return
            # Read again under the lock: a create may have finished since ``list_active``.
            current = await self._registry.get(worker_id)
            if current is None or current.status.is_terminal or current.container_id:
                return
            await self._registry.set_status(
                worker_id, WorkerStatus.FAILED, error="create never finished"
            )
            report.failed.append(worker_id)
            return
        info = by_id.get(record.container_id)
        if info is not None and info.state not in _ENDED:
            self._slots.adopt(worker_id)
            self._watcher.watch(record, slot=info.labels.get(LABEL_WORKER))
            report.adopted.append(worker_id)
        elif worker_id not in self._watcher.releasing:
            await self._watcher.finish(record, info)
            report.failed.append(worker_id)

    async def _revoke_logins(
        self, logins: tuple[str, ...], live: set[str], report: ReconcileReport
    ) -> None:
        if self._logins is None:
            return
        for slot in logins:
            if slot not in live:
                await self._logins.revoke(slot)
                report.revoked.append(slot)

    def _in_pool(self, info: ContainerInfo) -> bool:
        """Held now: a standby the pool made after the snapshot (still young, but the
        first pass drops standbys regardless of age)."""
        return self._pool is not None and self._pool.holds(info.id)

    @staticmethod
    def _age_s(info: ContainerInfo, now: datetime) -> float:
        """Seconds since the runtime created it (its created-at label), else started."""
        created = info.labels.get(LABEL_CREATED)
        born: datetime | None = info.started_at
        if created:
            with contextlib.suppress(ValueError):
                born = datetime.fromisoformat(created)
        if born is None or born.tzinfo is None:
            return float("inf")
        return (now - born).total_seconds()
