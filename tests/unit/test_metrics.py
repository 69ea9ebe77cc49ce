"""ManagerMetrics: each metric's update, the observed command handler, the /metrics endpoint,
and a whole manager on the in-memory fakes feeding them (create -> ready -> result)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest
import structlog
from pydantic import JsonValue

from codeyard.adapters.memory.clock import SystemClock
from codeyard.adapters.memory.code_agent import ScriptedCodeAgent
from codeyard.adapters.memory.container_runtime import InMemoryContainerRuntime
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.adapters.memory.image_cache import InMemoryImageCache
from codeyard.adapters.memory.work_queue import InMemoryWorkQueue
from codeyard.adapters.memory.worker_registry import InMemoryWorkerRegistry
from codeyard.app.bootstrap import App
from codeyard.app.command_service import Forward
from codeyard.app.manager.config import ManagerConfig
from codeyard.app.manager.images import WorkerImages
from codeyard.app.manager.serve import Manager, build_manager
from codeyard.app.observability.commands import ObservedHandler, command_context
from codeyard.app.observability.metrics import (
    ManagerMetrics,
    MetricsPortUnavailable,
    metered_ensure,
    serve_metrics,
)
from codeyard.app.settings import Settings
from codeyard.domain.agent import AgentResult, ResultStatus
from codeyard.domain.commands import (
    AnyCommand,
    CreateWorker,
    DeleteWorker,
    GetStatus,
    ListWorkers,
    derived_worker_id,
)
from codeyard.domain.container import ImageRef
from codeyard.domain.errors import WorkerNotFound
from codeyard.domain.events import (
    AgentEvent,
    EventPayload,
    LifecyclePayload,
    MessagePayload,
    ResultPayload,
)
from codeyard.domain.streams import worker_output_stream
from codeyard.domain.worker import WorkerSpec, WorkerStatus
from codeyard.domain.worker_io import EVENT_FIELD, TYPE_FIELD

pytestmark = pytest.mark.anyio


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def value(metrics: ManagerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def event(
    payload: EventPayload, *, ts: datetime | None = None, run_id: str | None = None
) -> AgentEvent:
    return AgentEvent(
        seq=0, payload=payload, run_id=run_id, ts=ts or datetime.now(UTC), worker_id="w1"
    )


def result(status: ResultStatus, cost: float | None, provider: str = "claude") -> ResultPayload:
    return ResultPayload(result=AgentResult(status=status, provider=provider, cost_usd=cost))


def test_two_managers_in_one_process_have_separate_registries() -> None:
    first, second = ManagerMetrics(), ManagerMetrics()
    first.command("create", "ok")
    assert value(first, "codeyard_commands_total", type="create", outcome="ok") == 1
    assert value(second, "codeyard_commands_total", type="create", outcome="ok") is None


def test_workers_gauge_reads_the_snapshot_at_scrape_time_with_every_state() -> None:
    metrics = ManagerMetrics()
    counts = {"running": 2}
    metrics.workers_from(lambda: counts)
    assert value(metrics, "codeyard_workers", state="running") == 2
    assert value(metrics, "codeyard_workers", state="failed") == 0
    counts["running"] = 1  # no update call: the next scrape sees it
    assert value(metrics, "codeyard_workers", state="running") == 1
    text = metrics.render().decode()
    assert all(f'codeyard_workers{{state="{s.value}"}}' in text for s in WorkerStatus)


def test_spawn_is_observed_once_from_handled_to_ready_per_path() -> None:
    clock = FakeTime()
    metrics = ManagerMetrics(monotonic=clock)
    metrics.spawn_started("w-cold", warm=False, started=clock.now)
    metrics.spawn_started("w-warm", warm=True, started=clock.now)
    metrics.spawn_started("w-gone", warm=True, started=clock.now)
    clock.now += 3.0
    metrics.spawn_ready("w-cold")
    metrics.spawn_ready("w-cold")  # a replayed ready: not a second spawn
    clock.now += 1.0
    metrics.spawn_dropped("w-gone")
    metrics.spawn_ready("w-gone")
    metrics.spawn_ready("w-warm")
    metrics.spawn_ready("adopted")  # never spawned here
    cold = ("codeyard_worker_spawn_seconds_count", "codeyard_worker_spawn_seconds_sum")
    assert [value(metrics, n, path="cold") for n in cold] == [1, 3.0]
    assert [value(metrics, n, path="warm") for n in cold] == [1, 4.0]
    assert value(metrics, "codeyard_worker_spawn_seconds_bucket", path="cold", le="5.0") == 1
    assert value(metrics, "codeyard_worker_spawn_seconds_bucket", path="cold", le="2.0") == 0


def test_events_results_and_cost_are_counted_and_replays_are_not() -> None:
    start = datetime.now(UTC)
    metrics = ManagerMetrics(since=start)
    metrics.event(event(MessagePayload(text="hi")))
    metrics.event(event(MessagePayload(text="again")))
    metrics.event(event(result(ResultStatus.SUCCESS, 0.25)))
    metrics.event(event(result(ResultStatus.SUCCESS, 0.5)))
    metrics.event(event(result(ResultStatus.ERROR, None, provider="codex")))
    metrics.event(event(result(ResultStatus.SUCCESS, 9.0), ts=start - timedelta(seconds=1)))
    assert value(metrics, "codeyard_worker_events_total", type="message") == 2
    assert value(metrics, "codeyard_worker_events_total", type="result") == 3
    assert value(metrics, "codeyard_agent_cost_usd_total", provider="claude") == 0.75
    assert value(metrics, "codeyard_agent_cost_usd_total", provider="codex") is None
    ok = {"provider": "claude", "status": "success"}
    assert value(metrics, "codeyard_agent_results_total", **ok) == 2
    failed = {"provider": "codex", "status": "error"}
    assert value(metrics, "codeyard_agent_results_total", **failed) == 1


async def test_image_requests_ask_the_cache_first() -> None:
    metrics = ManagerMetrics()
    images = WorkerImages(
        InMemoryImageCache(), base_image="base", wrapper_hash="w", ca_certs_hash=""
    )
    spec = WorkerSpec()
    first = await metered_ensure(images, spec, metrics)
    second = await metered_ensure(images, spec, metrics)
    assert first.content_hash == second.content_hash == images.key(spec)
    assert value(metrics, "codeyard_image_cache_requests_total", result="build") == 1
    assert value(metrics, "codeyard_image_cache_requests_total", result="hit") == 1


async def test_image_requests_without_a_cache_are_judged_by_time() -> None:
    clock = FakeTime()
    metrics = ManagerMetrics(monotonic=clock)

    class SlowImages:
        def __init__(self, seconds: float) -> None:
            self.seconds = seconds

        async def ensure(self, spec: WorkerSpec) -> ImageRef:
            clock.now += self.seconds
            now = datetime.now(UTC)
            return ImageRef(
                tag="t", content_hash="h", image_id="i", created_at=now, last_used_at=now
            )

        def key(self, spec: WorkerSpec) -> str:
            return "h"

    await metered_ensure(SlowImages(0.1), WorkerSpec(), metrics)
    await metered_ensure(SlowImages(90.0), WorkerSpec(), metrics)
    assert value(metrics, "codeyard_image_cache_requests_total", result="hit") == 1
    assert value(metrics, "codeyard_image_cache_requests_total", result="build") == 1


async def test_queue_depth_of_the_known_queues() -> None:
    queue = InMemoryWorkQueue()
    for n in range(3):
        await queue.enqueue("tasks", {"n": n})
    await queue.enqueue("reviews", {})
    metrics = ManagerMetrics()
    await metrics.refresh_queues(queue)
    assert value(metrics, "codeyard_queue_depth", queue="tasks") == 3
    assert value(metrics, "codeyard_queue_depth", queue="reviews") is None
    metrics.queues.append("reviews")
    await metrics.refresh_queues(queue)
    assert value(metrics, "codeyard_queue_depth", queue="reviews") == 1


class Scripted:
    """A CommandHandler answering from a table; records the log context it ran in."""

    def __init__(self) -> None:
        self.contexts: list[dict[str, object]] = []

    async def handle(self, command: AnyCommand) -> JsonValue | Forward:
        self.contexts.append(dict(structlog.contextvars.get_contextvars()))
        match command:
            case GetStatus():
                raise WorkerNotFound("no such worker", worker_id=command.worker_id)
            case DeleteWorker():
                return Forward("worker:commands:owner:other")
            case ListWorkers():
                raise RuntimeError("boom")
        return {"ok": True}


async def test_observed_handler_counts_outcomes_and_binds_the_command_ids() -> None:
    metrics, inner = ManagerMetrics(), Scripted()
    handler = ObservedHandler(inner, metrics)
    await handler.handle(CreateWorker(request_id="r1"))
    with pytest.raises(WorkerNotFound):
        await handler.handle(GetStatus(request_id="r2", worker_id="w2"))
    assert isinstance(await handler.handle(DeleteWorker(request_id="r3", worker_id="w3")), Forward)
    with pytest.raises(RuntimeError):
        await handler.handle(ListWorkers(request_id="r4"))
    counted = {
        (t, o): value(metrics, "codeyard_commands_total", type=t, outcome=o)
        for t, o in [("create", "ok"), ("status", "worker_not_found"), ("delete", "forwarded")]
    }
    assert counted == {k: 1 for k in counted}
    assert value(metrics, "codeyard_commands_total", type="list", outcome="error") == 1
    assert inner.contexts == [
        {"request_id": "r1", "worker_id": derived_worker_id("r1")},
        {"request_id": "r2", "worker_id": "w2"},
        {"request_id": "r3", "worker_id": "w3"},
        {"request_id": "r4"},
    ]
    assert structlog.contextvars.get_contextvars() == {}  # unbound after each command
    assert command_context(CreateWorker(request_id="r5", worker_id="mine"))["worker_id"] == "mine"


async def test_the_endpoint_serves_the_registry_on_a_free_port_and_stops() -> None:
    metrics = ManagerMetrics()
    metrics.command("create", "ok")
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve_metrics, metrics, 0)
        url = f"http://127.0.0.1:{port}/metrics"
        async with httpx.AsyncClient() as client:
            response = await client.get(url)
        tg.cancel_scope.cancel()
    assert response.status_code == 200
    assert 'codeyard_commands_total{outcome="ok",type="create"} 1.0' in response.text
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):  # stopped with its task group
            await client.get(url)


async def test_a_taken_port_is_a_typed_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsPortUnavailable) as caught:
            await serve_metrics(ManagerMetrics(), port)
    assert caught.value.fields["port"] == port


# --- a whole manager on the fakes ----------------------------------------------------------


@dataclass
class Fakes:
    manager: Manager
    bus: InMemoryEventBus


@pytest.fixture
async def fakes() -> AsyncIterator[Fakes]:
    clock = SystemClock()
    bus = InMemoryEventBus(clock=clock)
    runtime = InMemoryContainerRuntime(owner="me", clock=clock)
    app = App(
        settings=Settings(),
        clock=clock,
        event_bus=bus,
        queue=InMemoryWorkQueue(clock=clock),
        registry=InMemoryWorkerRegistry(clock=clock),
        runtime=runtime,
        image_cache=InMemoryImageCache(clock=clock),
        code_agent=ScriptedCodeAgent(),
    )
    images = WorkerImages(
        InMemoryImageCache(clock=clock), base_image="b", wrapper_hash="w", ca_certs_hash=""
    )
    # Containers never die here: the sweep would otherwise end the fake workers.
    manager = build_manager(app, ManagerConfig(owner="me", watch_interval_s=3600), images)
    async with anyio.create_task_group() as tg:
        await tg.start(manager.watcher.run)
        yield Fakes(manager, bus)
        tg.cancel_scope.cancel()


async def say(
    bus: InMemoryEventBus, worker_id: str, payload: EventPayload, run: str | None
) -> None:
    stamped = AgentEvent(seq=0, payload=payload, worker_id=worker_id, run_id=run)
    await bus.publish(
        worker_output_stream(worker_id),
        {EVENT_FIELD: stamped.model_dump_json(), TYPE_FIELD: payload.type},
    )


async def test_a_created_worker_feeds_every_metric(fakes: Fakes) -> None:
    metrics = fakes.manager.metrics
    handler = ObservedHandler(fakes.manager.handler, metrics)
    created = await handler.handle(CreateWorker(request_id="c1", prompt="hi"))
    assert isinstance(created, dict)
    worker_id = str(created["worker_id"])
    assert value(metrics, "codeyard_workers", state="starting") == 1
    await say(fakes.bus, worker_id, LifecyclePayload(state="ready"), None)
    await say(fakes.bus, worker_id, MessagePayload(text="hello"), "c1")
    await say(fakes.bus, worker_id, result(ResultStatus.SUCCESS, 0.125), "c1")
    ok = {"provider": "claude", "status": "success"}
    with anyio.fail_after(5):
        while True:  # the watcher's follower task applies the events
            if value(metrics, "codeyard_agent_results_total", **ok) is not None:
                break
            await anyio.sleep(0.01)
    assert value(metrics, "codeyard_workers", state="running") == 1
    assert value(metrics, "codeyard_workers", state="starting") == 0
    assert value(metrics, "codeyard_worker_spawn_seconds_count", path="cold") == 1
    assert value(metrics, "codeyard_image_cache_requests_total", result="build") == 1
    assert value(metrics, "codeyard_worker_events_total", type="lifecycle") == 1
    assert value(metrics, "codeyard_agent_cost_usd_total", provider="claude") == 0.125
    assert value(metrics, "codeyard_commands_total", type="create", outcome="ok") == 1
    await handler.handle(DeleteWorker(request_id="d1", worker_id=worker_id))
    assert value(metrics, "codeyard_workers", state="running") == 0
