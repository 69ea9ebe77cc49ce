"""Prometheus metrics of one worker manager, served on ``manager.metrics_port``.

Each :class:`ManagerMetrics` owns its :class:`~prometheus_client.CollectorRegistry` (never
the process-global one), so several managers in one process (tests, embedders) never
clash. The manager calls the small update methods on the way; scrapes read:

- ``codeyard_workers{state}``: the workers this manager watches, by state, computed at
  scrape time from a sync snapshot the watcher keeps (scrapes run on the HTTP thread);
- ``codeyard_worker_spawn_seconds{path=cold|warm}``: create command handled -> ``ready``;
- ``codeyard_worker_events_total{type}`` (events/s is ``rate()`` of it);
- ``codeyard_queue_depth{queue}`` for the names in :attr:`ManagerMetrics.queues`;
- ``codeyard_image_cache_requests_total{result=hit|build}``;
- ``codeyard_agent_cost_usd_total{provider}``, ``codeyard_agent_results_total{provider,
  status}`` from result events;
- ``codeyard_commands_total{type,outcome}`` (outcome: ``ok``, ``forwarded`` or the error
  code);
- ``codeyard_warm_pool_standbys_replaced_total{found}``: warm-pool standbys found dead and
  replaced, by a watcher sweep (``sweep``) or by the create that claimed one (``claim``);
- ``codeyard_worker_logins_restored_total``: per-worker Redis logins made again after
  Redis lost them (a restart), by :mod:`codeyard.app.manager.login_restore`.

A manager that restarts follows every output stream from its start again: events stamped
before this object was made are replays, not counted, so restarts never double the
counters.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime

import anyio
import anyio.to_thread
import structlog
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from codeyard.app.manager.config import WorkerImageSource
from codeyard.domain.container import ImageRef
from codeyard.domain.errors import CodeyardError, InvalidInput
from codeyard.domain.events import AgentEvent, ResultPayload
from codeyard.domain.worker import WorkerSpec, WorkerStatus
from codeyard.ports.image_cache import ImageCache
from codeyard.ports.work_queue import WorkQueue

log = structlog.get_logger(__name__)

#: ensure() faster than this counts as a cache hit when the cache cannot be asked first.
HIT_THRESHOLD_S = 2.0
#: Spawn latency buckets: a warm start takes a second or two, a cold one with an image
#: build minutes.
SPAWN_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
Snapshot = Callable[[], Mapping[str, int]]


class MetricsPortUnavailable(InvalidInput):
    """The metrics endpoint cannot listen on the configured address."""

    code = "metrics_port_unavailable"


class _WorkersCollector(Collector):
    """``codeyard_workers{state}`` from the snapshot, every state present (0 if none)."""

    def __init__(self, metrics: ManagerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self._metrics.worker_states()
        family = GaugeMetricFamily(
            "codeyard_workers", "Workers this manager watches, by state.", labels=["state"]
        )
        for state in WorkerStatus:
            family.add_metric([state.value], counts.get(state.value, 0))
        yield family


class ManagerMetrics:
    """The metrics of one manager (see the module docstring). Thread-safe for scrapes."""

    def __init__(
        self,
        *,
        queues: Sequence[str] = ("tasks",),
        refresh_s: float = 15.0,
        monotonic: Callable[[], float] = time.monotonic,
        since: datetime | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        #: WorkQueue names whose depth is exported (refreshed every ``refresh_s``).
        self.queues: list[str] = list(queues)
        self.refresh_s = refresh_s
        self._monotonic = monotonic
        self._since = since or datetime.now(UTC)
        self._snapshot: Snapshot = dict
        self._spawning: dict[str, tuple[str, float]] = {}
        reg = self.registry
        self.spawn_seconds = Histogram(
            "codeyard_worker_spawn_seconds",
            "Create command handled -> worker ready.",
            ["path"],
            buckets=SPAWN_BUCKETS,
            registry=reg,
        )
        self.events = Counter(
            "codeyard_worker_events", "Agent events read from workers.", ["type"], registry=reg
        )
        self.queue_depth = Gauge(
            "codeyard_queue_depth", "Jobs in the work queue.", ["queue"], registry=reg
        )
        self.image_requests = Counter(
            "codeyard_image_cache_requests",
            "Worker images asked for on a cold create: found (hit) or built.",
            ["result"],
            registry=reg,
        )
        self.cost_usd = Counter(
            "codeyard_agent_cost_usd", "Agent cost reported by results.", ["provider"], registry=reg
        )
        self.results = Counter(
            "codeyard_agent_results", "Agent run results.", ["provider", "status"], registry=reg
        )
        self.commands = Counter(
            "codeyard_commands", "Commands handled.", ["type", "outcome"], registry=reg
        )
        self.standbys_replaced = Counter(
            "codeyard_warm_pool_standbys_replaced",
            "Warm-pool standbys found dead and replaced, by a sweep or at a claim.",
            ["found"],
            registry=reg,
        )
        self.logins_restored = Counter(
            "codeyard_worker_logins_restored",
            "Per-worker Redis logins made again after Redis lost them (a restart).",
            registry=reg,
        )
        reg.register(_WorkersCollector(self))

    # --- workers ---------------------------------------------------------------------------

    def workers_from(self, snapshot: Snapshot) -> None:
        """Read ``codeyard_workers`` from ``snapshot`` (sync, cheap: called per scrape)."""
        self._snapshot = snapshot

    def worker_states(self) -> Mapping[str, int]:
        return self._snapshot()

    def now(self) -> float:
        return self._monotonic()

    def spawn_started(self, worker_id: str, *, warm: bool, started: float) -> None:
        """A create spawned ``worker_id`` (handled at ``started``, see :meth:`now`)."""
        self._spawning[worker_id] = ("warm" if warm else "cold", started)

    def spawn_ready(self, worker_id: str) -> None:
        """``worker_id`` said ``ready``: observe its spawn (once; adopted workers: never)."""
        pending = self._spawning.pop(worker_id, None)
        if pending is not None:
            path, started = pending
            self.spawn_seconds.labels(path=path).observe(max(0.0, self.now() - started))

    def spawn_dropped(self, worker_id: str) -> None:
        """``worker_id`` ended or is no longer watched: it will not become ready."""
        self._spawning.pop(worker_id, None)

    # --- events, commands, images, queues --------------------------------------------------

    def event(self, event: AgentEvent) -> None:
        """Count one event from a worker's output stream (replays before start excluded)."""
        if event.ts < self._since:
            return
        payload = event.payload
        self.events.labels(type=payload.type).inc()
        if isinstance(payload, ResultPayload):
            result = payload.result
            self.results.labels(provider=result.provider, status=result.status.value).inc()
            if result.cost_usd:
                self.cost_usd.labels(provider=result.provider).inc(result.cost_usd)

    def command(self, command_type: str, outcome: str) -> None:
        self.commands.labels(type=command_type, outcome=outcome).inc()

    def standby_replaced(self, *, found: str) -> None:
        """A warm-pool standby was found dead (``sweep`` or ``claim``) and replaced."""
        self.standbys_replaced.labels(found=found).inc()

    def image_request(self, *, hit: bool) -> None:
        self.image_requests.labels(result="hit" if hit else "build").inc()

    async def refresh_queues(self, queue: WorkQueue) -> None:
        """Read the depth of every queue in :attr:`queues` (errors logged, not raised)."""
        for name in list(self.queues):
            try:
                depth = await queue.depth(name)
            except CodeyardError as exc:
                log.warning("queue depth unreadable", queue=name, error=str(exc))
                continue
            self.queue_depth.labels(queue=name).set(depth)

    async def refresh_loop(self, queue: WorkQueue) -> None:
        """:meth:`refresh_queues` every ``refresh_s`` until cancelled."""
        while True:
            await self.refresh_queues(queue)
            await anyio.sleep(self.refresh_s)

    def render(self) -> bytes:
        """The exposition text a scrape returns."""
        return generate_latest(self.registry)


async def metered_ensure(
    images: WorkerImageSource, spec: WorkerSpec, metrics: ManagerMetrics
) -> ImageRef:
    """``images.ensure(spec)``, counted as a hit when the image was cached beforehand.

    Sources with an ImageCache (``cache``) are asked first; others are judged by time.
    """
    cache = getattr(images, "cache", None)
    if isinstance(cache, ImageCache):
        hit = await cache.get(images.key(spec)) is not None
        ref = await images.ensure(spec)
    else:
        started = metrics.now()
        ref = await images.ensure(spec)
        hit = metrics.now() - started < HIT_THRESHOLD_S
    metrics.image_request(hit=hit)
    return ref


async def serve_metrics(
    metrics: ManagerMetrics,
    port: int,
    *,
    host: str = "127.0.0.1",
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``/metrics`` on ``host:port`` (0: any free port) until cancelled.

    ``task_status.started`` gets the bound port, which is also logged. The HTTP server is
    prometheus_client's threaded one: scrapes never wait on the event loop.
    """
    start = functools.partial(start_http_server, port, host, registry=metrics.registry)
    try:
        httpd, _ = await anyio.to_thread.run_sync(start)
    except OSError as exc:
        raise MetricsPortUnavailable(
            "cannot listen for metrics scrapes", host=host, port=port, error=str(exc)
        ) from exc
    bound = int(httpd.server_port)
    try:
        log.info("metrics serving", url=f"http://{host}:{bound}/metrics", port=bound)
        task_status.started(bound)
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            # shutdown() waits for serve_forever's poll loop (0.5 s) to notice.
            await anyio.to_thread.run_sync(httpd.shutdown, abandon_on_cancel=True)
        httpd.server_close()
