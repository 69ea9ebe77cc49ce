"""Opening and closing the application: ``async with open_app(settings) as app: ...``.

:func:`open_app` opens only the clients the selected backends need (and pings each, so a
wrong URL fails at start-up with ``ServiceUnavailable``, not at first use), runs the
PostgreSQL migrations when Postgres is selected, builds the adapters through the
:class:`~codeyard.app.container.Container` and yields an :class:`App` exposing the ports.

On the way out (normal exit, error or cancellation) everything opened is closed in reverse
order inside a shielded cancel scope with a deadline (``settings.shutdown_timeout_s``):
adapters holding connections first (``aclose``), then the clients. What has not closed by
the deadline is force-closed where the client allows it (asyncpg's ``terminate``) and
logged, so shutdown never hangs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import asyncpg
import docker
import redis.asyncio as aioredis
import structlog
from dependency_injector import providers

from codeyard.adapters.docker.client import open_docker_client
from codeyard.adapters.postgres.migrate import migrate
from codeyard.adapters.redis.connect import ping_redis
from codeyard.app.container import Container
from codeyard.app.settings import Settings
from codeyard.domain.errors import ServiceUnavailable
from codeyard.ports import (
    Clock,
    CodeAgent,
    ContainerRuntime,
    EventBus,
    ImageCache,
    WorkerRegistry,
    WorkQueue,
)

log = structlog.get_logger(__name__)

#: How long opening one client may take before start-up fails.
CONNECT_TIMEOUT_S = 10.0
#: Bound on one Postgres statement; the queue and registry statements take milliseconds.
POSTGRES_COMMAND_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class App:
    """The running application's ports, ready to use inside ``open_app``."""

    settings: Settings
    clock: Clock
    event_bus: EventBus
    queue: WorkQueue
    registry: WorkerRegistry
    runtime: ContainerRuntime
    image_cache: ImageCache
    code_agent: CodeAgent
    #: Migrations applied by this start-up (empty when none were pending or no Postgres).
    migrations_applied: tuple[str, ...] = ()
    #: The clients opened (``redis_client``, ``postgres_pool``, ``docker_client``), for
    #: entry points that build more than the ports (the manager's image cache).
    clients: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _Closer:
    name: str
    close: Callable[[], Awaitable[object]]
    force: Callable[[], object] | None = None


@asynccontextmanager
async def open_app(
    settings: Settings, *, overrides: Mapping[str, object] | None = None
) -> AsyncIterator[App]:
    """Open the clients the settings select, yield the :class:`App`, close everything.

    ``overrides`` replaces container providers by name with fixed objects, for tests and
    embedding: ``{"clock": ManualClock(), "code_agent": ScriptedCodeAgent(...)}``.
    """
    closers: list[_Closer] = []
    try:
        clients = await _open_clients(settings, closers)
        container = Container(settings=settings, **clients)
        for name, value in (overrides or {}).items():
            getattr(container, name).override(providers.Object(value))
        applied: list[str] = []
        if "postgres_pool" in clients:
            with anyio.fail_after(CONNECT_TIMEOUT_S * 6):
                applied = await migrate(clients["postgres_pool"])
            if applied:
                log.info("postgres migrated", applied=applied)
        app = App(
            settings=settings,
            clock=container.clock(),
            event_bus=container.event_bus(),
            queue=container.queue(),
            registry=container.registry(),
            runtime=container.runtime(),
            image_cache=container.image_cache(),
            code_agent=container.code_agent(),
            migrations_applied=tuple(applied),
            clients=clients,
        )
        for name in ("event_bus", "queue", "registry", "runtime", "image_cache", "code_agent"):
            aclose = getattr(getattr(app, name), "aclose", None)
            if aclose is not None:
                closers.append(_Closer(name, aclose))
        yield app
    finally:
        await _close_all(closers, settings.shutdown_timeout_s)


async def _open_clients(settings: Settings, closers: list[_Closer]) -> dict[str, Any]:
    backends = settings.backends
    clients: dict[str, Any] = {}
    if backends.needs_redis:
        client = aioredis.Redis.from_url(
            settings.secret("redis_url"),
            decode_responses=True,
            # Blocking reads hold a connection each (the manager follows every worker's
            # output stream): redis-py's default pool of 100 capped a manager near 100
            # workers (measured by bench/parallel.py).
            max_connections=settings.redis_max_connections,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
        )
        closers.append(_Closer("redis", client.aclose))
        await ping_redis(client, timeout_s=CONNECT_TIMEOUT_S)
        clients["redis_client"] = client
    if backends.needs_postgres:
        try:
            with anyio.fail_after(CONNECT_TIMEOUT_S):
                pool: asyncpg.Pool[asyncpg.Record] = await asyncpg.create_pool(
                    settings.secret("postgres_dsn"),
                    min_size=1,
                    max_size=10,
                    # A connection silently cut (network split, no RST) would otherwise
                    # hang a call for the kernel's TCP timeout (minutes) instead of
                    # raising TimeoutError -> ServiceUnavailable, which commands retry.
                    timeout=CONNECT_TIMEOUT_S,
                    command_timeout=POSTGRES_COMMAND_TIMEOUT_S,
                )
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            raise ServiceUnavailable(
                "PostgreSQL unreachable",
                service="postgres",
                detail=str(exc) or type(exc).__name__,
            ) from exc
        closers.append(_Closer("postgres", pool.close, pool.terminate))
        clients["postgres_pool"] = pool
    if backends.needs_docker:
        try:
            with anyio.fail_after(CONNECT_TIMEOUT_S):
                docker_client: docker.DockerClient = await anyio.to_thread.run_sync(
                    lambda: open_docker_client(
                        settings.docker_host, max_pool_size=settings.docker_max_pool_size
                    ),
                    abandon_on_cancel=True,
                )
        except TimeoutError as exc:
            raise ServiceUnavailable(
                "Docker engine did not answer in time", service="docker"
            ) from exc
        closers.append(_Closer("docker", lambda: anyio.to_thread.run_sync(docker_client.close)))
        clients["docker_client"] = docker_client
    return clients


async def _close_all(closers: list[_Closer], timeout_s: float) -> None:
    """Close in reverse order under one shielded deadline; force-close what is left."""
    with anyio.CancelScope(shield=True):
        with anyio.move_on_after(timeout_s):
            while closers:
                closer = closers[-1]
                try:
                    await closer.close()
                except Exception as exc:  # one failed close must not stop the others
                    log.warning("close failed", resource=closer.name, error=repr(exc))
                closers.pop()
        for closer in reversed(closers):
            log.warning("close deadline passed", resource=closer.name, timeout_s=timeout_s)
            if closer.force is not None:
                try:
                    closer.force()
                except Exception as exc:  # best effort
                    log.warning("force close failed", resource=closer.name, error=repr(exc))
        closers.clear()
