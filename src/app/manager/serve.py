"""``codeyard serve``: one worker-manager process.

Start-up: open the clients (:func:`~codeyard.app.bootstrap.open_app`), get the worker
images ready (Docker: base image, wrapper wheel, image cache; first run takes minutes),
start the watcher, reconcile once (adopt this owner's live workers, fail vanished ones,
remove orphans) and only then consume commands: from the shared ``worker:commands`` and
from this owner's own stream, where other managers forward commands about its workers.
Then in the background: the warm pool, periodic reconciliation, and per-worker Redis
logins made again when a Redis restart lost them (:mod:`.login_restore`).

Stopping (SIGTERM, SIGINT, cancellation): command handling stops (entries in flight stay
pending, for this or another manager), the warm pool removes its standby containers, and
the workers keep running: they belong to the registry, and the next start adopts them.
"""

from __future__ import annotations

import functools
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import structlog
from anyio.abc import TaskStatus

from codeyard.adapters.memory.image_cache import InMemoryImageCache
from codeyard.adapters.redis.image_usage import RedisImageUsage
from codeyard.adapters.redis.worker_acl import RedisAclWorkerCredentials
from codeyard.app.bootstrap import App, open_app
from codeyard.app.command_service import CommandService, CommandServiceConfig
from codeyard.app.credentials import open_credential_store
from codeyard.app.observability.commands import ObservedHandler
from codeyard.app.observability.metrics import ManagerMetrics, serve_metrics
from codeyard.app.settings import Settings
from codeyard.domain.errors import CodeyardError
from codeyard.domain.streams import owner_commands_stream
from codeyard.ports.credential_store import CredentialStore
from codeyard.ports.worker_credentials import WorkerCredentials

from .config import ManagerConfig, WorkerImageSource
from .handler import WorkerManager
from .images import WorkerImages, docker_worker_images
from .login_restore import restore_logins_loop
from .pool import WarmPool
from .reconcile import Reconciler
from .settings import InvalidManagerSettings, manager_config
from .slots import Slots
from .watcher import WorkerWatcher

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Manager:
    """The parts of a running manager (tests and embedders look inside)."""

    config: ManagerConfig
    app: App
    handler: WorkerManager
    watcher: WorkerWatcher
    pool: WarmPool
    reconciler: Reconciler
    slots: Slots
    metrics: ManagerMetrics = field(default_factory=ManagerMetrics)
    #: Each worker's own Redis login (``worker_redis_acl``); ``None``: the manager's.
    worker_logins: WorkerCredentials | None = None


async def worker_images(settings: Settings, app: App) -> WorkerImageSource:
    """Docker: the real image cache (Redis ledger when Redis is there); else in memory."""
    if settings.backends.runtime != "docker":
        return WorkerImages(
            InMemoryImageCache(clock=app.clock),
            base_image="codeyard-base:memory",
            wrapper_hash="memory",
            ca_certs_hash="",
        )
    # Images live per engine: the ledger (last uses, build locks) is kept per owner, so
    # managers on other engines neither wait for each other's builds nor keep each other's
    # images alive.
    usage = RedisImageUsage(app.clients["redis_client"], key=f"codeyard:images:{settings.owner}")
    return await docker_worker_images(
        settings, app.clients["docker_client"], usage=usage, clock=app.clock
    )


def build_manager(
    app: App,
    config: ManagerConfig,
    images: WorkerImageSource,
    *,
    metrics: ManagerMetrics | None = None,
    credentials: CredentialStore | None = None,
    worker_logins: WorkerCredentials | None = None,
) -> Manager:
    """``credentials``: where worker secrets come from; ``None`` refuses specs with any.
    ``worker_logins``: per-worker Redis logins; by default ACL users on the manager's
    Redis when ``config.worker_redis_acl``."""
    if worker_logins is None and config.worker_redis_acl:
        worker_logins = _redis_logins(app, config)
    metrics = metrics or ManagerMetrics()
    slots = Slots(config.max_workers)
    runtime, registry, clock = app.runtime, app.registry, app.clock
    watcher = WorkerWatcher(
        config=config,
        bus=app.event_bus,
        registry=registry,
        runtime=runtime,
        queue=app.queue,
        clock=clock,
        slots=slots,
        metrics=metrics,
        worker_logins=worker_logins,
    )
    metrics.workers_from(watcher.state_counts)
    pool = WarmPool(
        config=config, runtime=runtime, images=images, worker_logins=worker_logins, metrics=metrics
    )
    watcher.on_listing = pool.check  # dead standbys: found by the watcher's sweeps
    handler = WorkerManager(
        config=config,
        bus=app.event_bus,
        registry=registry,
        runtime=runtime,
        images=images,
        clock=clock,
        slots=slots,
        watcher=watcher,
        pool=pool,
        metrics=metrics,
        credentials=credentials,
        worker_logins=worker_logins,
    )
    reconciler = Reconciler(
        config=config,
        registry=registry,
        runtime=runtime,
        clock=clock,
        slots=slots,
        watcher=watcher,
        pool=pool,
        worker_logins=worker_logins,
    )
    return Manager(config, app, handler, watcher, pool, reconciler, slots, metrics, worker_logins)


def _redis_logins(app: App, config: ManagerConfig) -> WorkerCredentials:
    client = app.clients.get("redis_client")
    if client is None:
        raise InvalidManagerSettings(
            "per-worker Redis logins need the Redis event bus: set "
            "CODEYARD_BACKENDS__EVENT_BUS=redis, or CODEYARD_MANAGER__WORKER_REDIS_ACL=false",
            setting="CODEYARD_MANAGER__WORKER_REDIS_ACL",
        )
    return RedisAclWorkerCredentials(client, owner=config.owner)


async def run_manager(
    manager: Manager,
    *,
    concurrency: int = 16,
    takeover_s: float | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve commands until cancelled (see the module docstring); with ``metrics_port``
    (0: any free port) also ``/metrics``, queue depths refreshed in the background.
    ``takeover_s`` defaults to the manager's own ``config.takeover_s``, which its reconciler
    also waits on: two different values would let it fail creates still to be re-delivered."""
    config, bus = manager.config, manager.app.event_bus
    if takeover_s is None:
        takeover_s = config.takeover_s
    if manager.worker_logins is not None:
        await manager.worker_logins.check()  # WorkerAclUnavailable: fail before serving
    handler = ObservedHandler(manager.handler, manager.metrics)
    async with anyio.create_task_group() as tg:
        if metrics_port is not None:
            await tg.start(
                functools.partial(serve_metrics, manager.metrics, metrics_port, host=metrics_host)
            )
            tg.start_soon(manager.metrics.refresh_loop, manager.app.queue)
        await tg.start(manager.watcher.run)
        await manager.reconciler.reconcile()
        for stream in ("worker:commands", owner_commands_stream(config.owner)):
            service = CommandService(
                bus,
                handler,
                CommandServiceConfig(
                    stream=stream,
                    concurrency=concurrency,
                    min_idle_s=takeover_s,
                    store_outage_s=config.store_outage_s,
                ),
            )
            await tg.start(service.run)
        await tg.start(manager.pool.run)
        tg.start_soon(_reconcile_loop, manager)
        if manager.worker_logins is not None:  # Redis forgets them when it restarts
            tg.start_soon(
                functools.partial(
                    restore_logins_loop,
                    manager.worker_logins,
                    interval_s=config.watch_interval_s,
                    metrics=manager.metrics,
                )
            )
        log.info("worker manager serving", owner=config.owner, max_workers=config.max_workers)
        task_status.started()


async def _reconcile_loop(manager: Manager) -> None:
    while True:
        await anyio.sleep(manager.config.reconcile_interval_s)
        try:
            await manager.reconciler.reconcile()
        except CodeyardError as exc:
            log.warning("reconcile failed", error=str(exc))


async def serve(
    settings: Settings,
    *,
    on_ready: Callable[[Manager], Awaitable[None]] | None = None,
) -> None:
    """Run a manager from ``settings`` until SIGTERM/SIGINT."""
    async with open_app(settings) as app:
        images = await worker_images(settings, app)
        manager = build_manager(
            app, manager_config(settings), images, credentials=open_credential_store(settings)
        )
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for signum in signals:
                        log.info("worker manager stopping", signal=signum)
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            await tg.start(
                lambda task_status: run_manager(
                    manager,
                    concurrency=settings.manager.concurrency,
                    takeover_s=settings.manager.takeover_s,
                    metrics_port=settings.manager.metrics_port,
                    metrics_host=settings.manager.metrics_host,
                    task_status=task_status,
                )
            )
            if on_ready is not None:
                await on_ready(manager)
