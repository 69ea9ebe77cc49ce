"""WarmPool: started standby containers, so a create skips the cold start.

For each template spec (``ManagerConfig.warm_pool_templates``) the pool keeps
``warm_pool_size`` containers started in standby (``codeyard-worker --standby pool-*``: the
wrapper has imported its agent and connected to Redis, and blocks on its standby stream). A
create whose spec matches a template in everything that shapes the *container* (image,
resources, network, runtime, labels; not instructions, allowed commands or env, which the
assignment carries) takes one: the manager publishes the assignment and the worker is live,
no ``docker create/start`` on the path. Taking wakes the refill loop.

Pool containers are not workers: they are not in the registry and hold no worker slot.
After a manager restart the reconciler removes them (label role=standby) and the pool makes
new ones: an unassigned standby is cheaper to replace than to trust.

With per-worker Redis logins (``worker_logins``) each standby gets its own, limited to its
standby stream until the claim binds it to the worker; a standby removed here loses it.

A claim is two steps: ``take`` hands a standby out, ``handover`` wraps the rest of the
create. Until ``handover`` ends the pool still *holds* the standby (``holds``, ``held``,
``slots``): between the take and the registry write that names its container, nothing else
refers to that ``pool-*`` container, and a reconcile pass must not take it for an orphan.
``handover`` lets go only after the registry names the container (the create returned), or
after removing the container and its login itself (the create failed, a store outage
included, see :meth:`WarmPool.handover`). The reconciler
reads what the pool holds *before* it reads the registry, so every pass sees the standby
in at least one of the two: no window.

Standbys die too (OOM, killed, a CLI that crashes at boot). :meth:`check` gets each
watcher sweep's container listing (no listing of its own): a ready standby whose container
has ended or is gone is dropped from the pool, its login revoked, its container removed,
and the refill replaces it. Between two sweeps a claim may still take a dead one; the
create then finds it dead (:meth:`inspect_claimed`) and takes another or starts cold
(``create.WorkerCreator._spawn``). Both count in
``codeyard_warm_pool_standbys_replaced_total{found=sweep|claim}``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import structlog
from anyio.abc import TaskStatus

from codeyard.app.observability.metrics import ManagerMetrics
from codeyard.domain.container import ContainerInfo, ContainerState
from codeyard.domain.errors import CodeyardError, ContainerNotFound
from codeyard.domain.worker import WorkerSpec
from codeyard.ports.container_runtime import ContainerRuntime
from codeyard.ports.worker_credentials import WorkerCredentials

from .config import ManagerConfig, WorkerImageSource
from .launch import POOL_SLOT_PREFIX, death_reason, worker_container_spec

log = structlog.get_logger(__name__)
CLEANUP_DEADLINE_S = 30.0
_ENDED = (ContainerState.EXITED, ContainerState.DEAD)


class StandbyDead(CodeyardError):
    """A claimed standby's container has ended or is gone (the create falls back)."""

    code = "standby_dead"


@dataclass(frozen=True)
class Standby:
    slot: str
    container: ContainerInfo
    image: str


def container_key(spec: WorkerSpec, images: WorkerImageSource) -> str:
    """What must match for a standby container to serve ``spec``."""
    shape = spec.model_dump(mode="json", exclude={"instructions", "allowed_commands", "env"})
    shape["image"] = images.key(spec)
    return json.dumps(shape, sort_keys=True)


class WarmPool:
    def __init__(
        self,
        *,
        config: ManagerConfig,
        runtime: ContainerRuntime,
        images: WorkerImageSource,
        worker_logins: WorkerCredentials | None = None,
        metrics: ManagerMetrics | None = None,
    ) -> None:
        self._config = config
        self._logins = worker_logins
        self._metrics = metrics or ManagerMetrics()
        #: Slots with a login and a container not handed out yet (the reconciler keeps
        #: their logins: a starting one has no container to show for it yet).
        self._slots: set[str] = set()
        self._runtime = runtime
        self._images = images
        self._ready: dict[str, list[Standby]] = {}
        self._wake = anyio.Event()
        #: Every container this pool made and has not removed or finished handing over.
        self._mine: set[str] = set()
        self.retry_s = 5.0

    def holds(self, container_id: str) -> bool:
        """Whether ``container_id`` is a standby of this pool: starting, ready or claimed
        and not handed over yet."""
        return container_id in self._mine

    def held(self) -> frozenset[str]:
        """The containers ``holds`` is true for, now (the reconciler's snapshot)."""
        return frozenset(self._mine)

    def slots(self) -> frozenset[str]:
        """The standby slots this pool is starting, holds ready or is handing over."""
        return frozenset(self._slots)

    def size(self) -> int:
        return sum(len(v) for v in self._ready.values())

    def take(self, spec: WorkerSpec) -> Standby | None:
        """A started standby container for ``spec``, or ``None``; the pool keeps holding
        it until :meth:`handover` ends (the caller must enter it right away)."""
        if not self._config.warm_pool_size or spec.secrets:
            return None
        ready = self._ready.get(container_key(spec, self._images))
        if not ready:
            return None
        standby = ready.pop(0)
        self._wake.set()  # refill now: a claimed standby is no longer ready
        return standby

    @asynccontextmanager
    async def handover(self, standby: Standby | None) -> AsyncIterator[None]:
        """Wrap a claim of ``standby`` (no-op for ``None``) up to the registry write that
        names its container. On an error the standby is removed with its login (no one
        else knows it); either way the pool stops holding it on the way out.

        A store outage removes it too, unlike the container of a cold create, which
        ``WorkerCreator._pause`` keeps: the standby has its assignment already and would
        run as the worker, while a retry that finds no record naming it (the likely case:
        the write failed) starts another container for the same worker id. Two workers
        reading one input is worse than the rarer lost commit, which the retry then finds
        naming a removed container: a death, reported and handled as any."""
        if standby is None:
            yield
            return
        try:
            yield
        except BaseException as exc:
            if isinstance(exc, StandbyDead):
                log.warning("claimed standby was dead; replacing it", slot=standby.slot)
                self._metrics.standby_replaced(found="claim")
            with anyio.CancelScope(shield=True):
                try:
                    await self._runtime.remove(standby.container.id)
                except CodeyardError as exc:  # once released, an orphan for the reconciler
                    log.warning("claimed standby not removed", slot=standby.slot, error=str(exc))
                await self._revoke(standby.slot)
            raise
        finally:
            self._mine.discard(standby.container.id)
            self._slots.discard(standby.slot)

    async def inspect_claimed(self, standby: Standby) -> ContainerInfo:
        """``standby``'s container now; :class:`StandbyDead` when it has ended or is gone
        (inside :meth:`handover`, which then removes it and revokes its login)."""
        try:
            info = await self._runtime.inspect(standby.container.id)
        except ContainerNotFound as exc:
            raise StandbyDead("claimed standby is gone", slot=standby.slot) from exc
        if info.state in _ENDED:
            raise StandbyDead("claimed standby has ended", slot=standby.slot, exit=info.exit_code)
        return info

    async def check(self, listing: Mapping[str, ContainerInfo]) -> None:
        """Drop, clean up and replace every ready standby whose container has ended or is
        gone. ``listing``: this owner's containers by id (a watcher sweep's); a standby
        missing from it (started after the listing, or removed) is inspected."""
        dead: list[tuple[Standby, ContainerInfo | None]] = []
        for ready in list(self._ready.values()):
            for standby in list(ready):
                info = listing.get(standby.container.id)
                if info is None:
                    try:
                        info = await self._runtime.inspect(standby.container.id)
                    except ContainerNotFound:
                        info = None
                    except CodeyardError as exc:  # unknown: the next sweep looks again
                        log.warning("standby not inspected", slot=standby.slot, error=str(exc))
                        continue
                # Still ready after the await (not claimed meanwhile): out of the pool
                # before any await, so no claim can take it and bind its login from now on.
                if (info is None or info.state in _ENDED) and standby in ready:
                    ready.remove(standby)
                    dead.append((standby, info))
        if dead:
            self._wake.set()  # the refill starts the replacements
        for standby, info in dead:
            reason = death_reason(info)
            log.warning("standby died in the pool; replacing it", slot=standby.slot, reason=reason)
            self._metrics.standby_replaced(found="sweep")
            await self._revoke(standby.slot)
            try:
                await self._runtime.remove(standby.container.id)
            except CodeyardError as exc:  # an exited orphan: the reconciler removes it
                log.warning("dead standby not removed", slot=standby.slot, error=str(exc))
            self._mine.discard(standby.container.id)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Keep the pool full until cancelled; removes its containers on the way out."""
        task_status.started()
        try:
            while True:
                self._wake = anyio.Event()
                try:
                    await self.fill()
                except CodeyardError as exc:
                    log.warning("warm pool refill failed", error=str(exc))
                    with anyio.move_on_after(self.retry_s):
                        await anyio.sleep_forever()
                    continue
                await self._wake.wait()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_DEADLINE_S):
                await self.drain()

    async def fill(self) -> None:
        """Start standby containers until every template has ``warm_pool_size`` of them."""
        for template in self._config.warm_pool_templates:
            key = container_key(template, self._images)
            ready = self._ready.setdefault(key, [])
            missing = self._config.warm_pool_size - len(ready)
            if missing <= 0:
                continue
            image = await self._images.ensure(template)
            async with anyio.create_task_group() as tg:
                for _ in range(missing):
                    tg.start_soon(self._start_one, template, image.tag, image.content_hash, ready)

    async def _start_one(
        self, template: WorkerSpec, image: str, image_hash: str, ready: list[Standby]
    ) -> None:
        slot = POOL_SLOT_PREFIX + uuid.uuid4().hex[:16]
        self._slots.add(slot)
        try:
            login = await self._logins.issue(slot) if self._logins is not None else None
            spec = worker_container_spec(
                template,
                image=image,
                image_hash=image_hash,
                slot=slot,
                config=self._config,
                login=login,
            )
            info = await self._runtime.create(spec)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._revoke(slot)
            raise
        self._mine.add(info.id)
        try:
            await self._runtime.start(info.id)
        except BaseException:
            with anyio.CancelScope(shield=True):
                self._mine.discard(info.id)
                await self._runtime.remove(info.id)
                await self._revoke(slot)
            raise
        ready.append(Standby(slot=slot, container=info, image=image))

    async def drain(self) -> None:
        """Remove every standby container not taken."""
        standbys = [s for ready in self._ready.values() for s in ready]
        self._ready.clear()
        for standby in standbys:
            self._mine.discard(standby.container.id)
            try:
                await self._runtime.remove(standby.container.id)
            except CodeyardError as exc:
                log.warning("standby not removed", slot=standby.slot, error=str(exc))
            await self._revoke(standby.slot)

    async def _revoke(self, slot: str) -> None:
        """Forget ``slot`` and delete its login; a failure leaves it to the reconciler."""
        self._slots.discard(slot)
        if self._logins is None:
            return
        try:
            await self._logins.revoke(slot)
        except CodeyardError as exc:
            log.warning("standby login not revoked", slot=slot, error=str(exc))
