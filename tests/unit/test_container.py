"""The container wires the adapters the settings select; open_app opens and closes them."""

from __future__ import annotations

from datetime import timedelta

import anyio
import asyncpg
import docker
import pytest
import redis.asyncio as aioredis
from dependency_injector.errors import Error as WiringError

from codeyard.adapters.docker.container_runtime import DockerContainerRuntime
from codeyard.adapters.memory.clock import ManualClock
from codeyard.adapters.memory.code_agent import ScriptedCodeAgent
from codeyard.adapters.memory.container_runtime import InMemoryContainerRuntime
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.adapters.memory.image_cache import InMemoryImageCache
from codeyard.adapters.memory.work_queue import InMemoryWorkQueue
from codeyard.adapters.memory.worker_registry import InMemoryWorkerRegistry
from codeyard.adapters.postgres.work_queue import PostgresWorkQueue
from codeyard.adapters.postgres.worker_registry import PostgresWorkerRegistry
from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.app.bootstrap import App, open_app
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
from tests.services import free_port

PORTS = {
    "clock": Clock,
    "event_bus": EventBus,
    "queue": WorkQueue,
    "registry": WorkerRegistry,
    "runtime": ContainerRuntime,
    "image_cache": ImageCache,
    "code_agent": CodeAgent,
}


def test_memory_settings_wire_the_in_memory_adapters() -> None:
    container = Container(settings=Settings(owner="test-owner"))
    assert isinstance(container.event_bus(), InMemoryEventBus)
    assert isinstance(container.queue(), InMemoryWorkQueue)
    assert isinstance(container.registry(), InMemoryWorkerRegistry)
    assert isinstance(container.runtime(), InMemoryContainerRuntime)
    assert isinstance(container.image_cache(), InMemoryImageCache)
    assert isinstance(container.code_agent(), ScriptedCodeAgent)
    for name, port in PORTS.items():
        assert isinstance(getattr(container, name)(), port), name
    # Singletons: every consumer shares one bus, one queue...
    assert container.event_bus() is container.event_bus()
    assert container.queue() is container.queue()


@pytest.mark.anyio  # asyncpg's Pool wants a running event loop even when not awaited
async def test_server_backends_wire_the_real_adapters_without_connecting() -> None:
    settings = Settings(
        backends={"event_bus": "redis", "queue": "postgres", "registry": "postgres"}
        | {"runtime": "docker"},
        redis_url="redis://127.0.0.1:1/0",
        postgres_dsn="postgresql://nobody@127.0.0.1:1/none",
    )
    # None of these connect when created: a redis client and an asyncpg pool are lazy
    # until used/awaited, and a DockerClient with a fixed API version does not ask.
    redis_client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", decode_responses=True)
    pool = asyncpg.create_pool("postgresql://nobody@127.0.0.1:1/none")
    docker_client = docker.DockerClient(
        base_url="tcp://127.0.0.1:1", version="1.41", max_pool_size=32
    )
    try:
        container = Container(
            settings=settings,
            redis_client=redis_client,
            postgres_pool=pool,
            docker_client=docker_client,
        )
        assert isinstance(container.event_bus(), RedisEventBus)
        assert isinstance(container.queue(), PostgresWorkQueue)
        assert isinstance(container.registry(), PostgresWorkerRegistry)
        assert isinstance(container.runtime(), DockerContainerRuntime)
    finally:
        docker_client.close()
        await redis_client.aclose()


def test_a_selected_backend_without_its_client_fails_loudly() -> None:
    settings = Settings(backends={"event_bus": "redis"}, redis_url="redis://127.0.0.1:1/0")
    container = Container(settings=settings)
    with pytest.raises(WiringError):
        container.event_bus()


# --- open_app -----------------------------------------------------------------------------


class _ClosingAgent(ScriptedCodeAgent):
    """A scripted agent with an ``aclose`` that records (and may delay) being closed."""

    def __init__(self, close_delay_s: float = 0.0) -> None:
        super().__init__()
        self.close_delay_s = close_delay_s
        self.close_started = False
        self.closed = False

    async def aclose(self) -> None:
        self.close_started = True
        await anyio.sleep(self.close_delay_s)
        self.closed = True


@pytest.mark.anyio
async def test_open_app_with_memory_backends_round_trips_and_closes() -> None:
    agent = _ClosingAgent()
    clock = ManualClock()
    async with open_app(Settings(), overrides={"code_agent": agent, "clock": clock}) as app:
        assert isinstance(app, App)
        for name, port in PORTS.items():
            assert isinstance(getattr(app, name), port), name
        assert app.clock is clock
        assert app.migrations_applied == ()
        entry = await app.event_bus.publish("s", {"k": "v"})
        assert [m.id for m in await app.event_bus.read("s")] == [entry]
        job = await app.queue.enqueue("q", {"n": 1})
        claimed = await app.queue.claim("q", "me", lease=timedelta(seconds=60))
        assert claimed is not None
        assert claimed.id == job.id
        assert not agent.closed
    assert agent.closed


@pytest.mark.anyio
async def test_cleanup_is_shielded_from_the_cancelled_body() -> None:
    agent = _ClosingAgent(close_delay_s=0.2)
    with anyio.move_on_after(0.1) as scope:
        async with open_app(Settings(), overrides={"code_agent": agent}):
            await anyio.sleep(60)
    assert scope.cancelled_caught
    assert agent.closed, "the close ran to the end although the body was cancelled"


@pytest.mark.anyio
async def test_cleanup_gives_up_at_the_shutdown_deadline() -> None:
    agent = _ClosingAgent(close_delay_s=60)
    started = anyio.current_time()
    with anyio.fail_after(10):
        async with open_app(Settings(shutdown_timeout_s=0.2), overrides={"code_agent": agent}):
            pass
    assert agent.close_started
    assert not agent.closed
    assert anyio.current_time() - started < 5


@pytest.mark.anyio
async def test_unreachable_redis_fails_start_up_with_a_typed_error() -> None:
    settings = Settings(
        backends={"event_bus": "redis"}, redis_url=f"redis://127.0.0.1:{free_port()}/0"
    )
    with anyio.fail_after(15), pytest.raises(ServiceUnavailable) as caught:
        async with open_app(settings):
            pytest.fail("must not start")
    assert caught.value.fields["service"] == "redis"


@pytest.mark.anyio
async def test_unreachable_postgres_fails_start_up_with_a_typed_error() -> None:
    settings = Settings(
        backends={"queue": "postgres"},
        postgres_dsn=f"postgresql://nobody@127.0.0.1:{free_port()}/none",
    )
    with anyio.fail_after(15), pytest.raises(ServiceUnavailable) as caught:
        async with open_app(settings):
            pytest.fail("must not start")
    assert caught.value.fields["service"] == "postgres"
