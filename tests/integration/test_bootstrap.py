"""open_app with every real backend selected: Redis, PostgreSQL and Docker, for real."""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta

import anyio
import asyncpg
import docker
import pytest

from codeyard.adapters.docker.container_runtime import DockerContainerRuntime
from codeyard.adapters.postgres.work_queue import PostgresWorkQueue
from codeyard.adapters.postgres.worker_registry import PostgresWorkerRegistry
from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.app.bootstrap import App, open_app
from codeyard.app.settings import Settings
from codeyard.domain.agent import AgentRequest
from codeyard.domain.container import LABEL_OWNER, ContainerSpec, ImageRecipe
from codeyard.domain.worker import WorkerRecord, WorkerSpec, WorkerStatus

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(redis_db: str, postgres_db: str, docker_client: docker.DockerClient) -> Settings:
    return Settings(
        backends={"event_bus": "redis", "queue": "postgres", "registry": "postgres"}
        | {"runtime": "docker"},
        redis_url=redis_db,
        postgres_dsn=postgres_db,
        owner=f"test-bootstrap-{uuid.uuid4().hex[:8]}",
    )


async def _connections_to(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(count)
    finally:
        await conn.close()


async def _round_trip_runtime(app: App, image: str) -> None:
    info = await app.runtime.create(ContainerSpec(image=image, command=("sleep", "30")))
    try:
        assert info.labels[LABEL_OWNER] == app.settings.owner
        await app.runtime.start(info.id)
        result = await app.runtime.exec(info.id, ["echo", "hello"])
        assert (result.exit_code, result.stdout.strip()) == (0, "hello")
        mine = await app.runtime.list({LABEL_OWNER: app.settings.owner})
        assert [c.id for c in mine] == [info.id]
    finally:
        await app.runtime.remove(info.id)
    assert await app.runtime.list({LABEL_OWNER: app.settings.owner}) == []


async def test_open_app_with_real_backends_round_trips_every_port(
    settings: Settings, test_image: str
) -> None:
    with anyio.fail_after(120):
        async with open_app(settings) as app:
            assert isinstance(app.event_bus, RedisEventBus)
            assert isinstance(app.queue, PostgresWorkQueue)
            assert isinstance(app.registry, PostgresWorkerRegistry)
            assert isinstance(app.runtime, DockerContainerRuntime)
            assert app.migrations_applied, "a fresh database gets the schema"

            entry = await app.event_bus.publish("bootstrap:test", {"hello": "world"})
            [message] = await app.event_bus.read("bootstrap:test")
            assert (message.id, message.fields) == (entry, {"hello": "world"})

            job = await app.queue.enqueue("bootstrap", {"n": 1})
            claimed = await app.queue.claim("bootstrap", "me", lease=timedelta(seconds=60))
            assert claimed is not None
            assert claimed.id == job.id
            done = await app.queue.complete(job.id, "me", result={"ok": True})
            assert done.result == {"ok": True}

            now = app.clock.now()
            record = WorkerRecord(
                worker_id="w-1", spec=WorkerSpec(), created_at=now, heartbeat_at=now
            )
            await app.registry.register(record)
            busy = await app.registry.set_status("w-1", WorkerStatus.RUNNING)
            assert busy.status is WorkerStatus.RUNNING
            assert [w.worker_id for w in await app.registry.list_active()] == ["w-1"]

            await _round_trip_runtime(app, test_image)

            image = await app.image_cache.ensure(ImageRecipe(base_image=test_image))
            assert await app.image_cache.get(image.content_hash) == image

            request = AgentRequest(provider=app.code_agent.provider, prompt="hi")
            async with contextlib.aclosing(app.code_agent.execute(request)) as stream:
                events = [event async for event in stream]
            assert events[-1].is_terminal
            assert await _connections_to(settings.secret("postgres_dsn")) >= 1

    # Everything closed: no connection of ours is left on the database.
    assert await _connections_to(settings.secret("postgres_dsn")) == 0


async def test_second_start_applies_no_migration(settings: Settings) -> None:
    async with open_app(settings) as first:
        assert first.migrations_applied
    async with open_app(settings) as second:
        assert second.migrations_applied == ()
