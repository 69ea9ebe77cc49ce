"""The dependency-injection container: which adapter implements which port. Wiring only.

Clients (Redis, the asyncpg pool, Docker) are not created here: the entry point opens the
ones the selected backends need (see :mod:`codeyard.app.bootstrap`) and passes them in as
the ``*_client`` / ``postgres_pool`` dependencies. A backend that is not selected never
resolves its client, so it may stay unset. Nothing here connects or does I/O on import.
"""

from __future__ import annotations

import asyncpg
import docker
import redis.asyncio as aioredis
from dependency_injector import containers, providers

from codeyard.adapters.docker.container_runtime import DockerContainerRuntime
from codeyard.adapters.memory.clock import SystemClock
from codeyard.adapters.memory.code_agent import ScriptedCodeAgent
from codeyard.adapters.memory.container_runtime import InMemoryContainerRuntime
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.adapters.memory.image_cache import InMemoryImageCache
from codeyard.adapters.memory.work_queue import InMemoryWorkQueue
from codeyard.adapters.memory.worker_registry import InMemoryWorkerRegistry
from codeyard.adapters.postgres.work_queue import PostgresWorkQueue
from codeyard.adapters.postgres.worker_registry import PostgresWorkerRegistry
from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.app.settings import Settings


class Container(containers.DeclarativeContainer):
    """``Container(settings=..., redis_client=..., postgres_pool=..., docker_client=...)``."""

    settings = providers.Dependency(instance_of=Settings)
    redis_client = providers.Dependency(instance_of=aioredis.Redis)
    postgres_pool = providers.Dependency(instance_of=asyncpg.Pool)
    docker_client = providers.Dependency(instance_of=docker.DockerClient)

    backends = settings.provided.backends

    clock = providers.Singleton(SystemClock)

    event_bus = providers.Selector(
        backends.event_bus,
        memory=providers.Singleton(InMemoryEventBus, clock=clock),
        redis=providers.Singleton(RedisEventBus, client=redis_client),
    )
    queue = providers.Selector(
        backends.queue,
        memory=providers.Singleton(InMemoryWorkQueue, clock=clock),
        postgres=providers.Singleton(PostgresWorkQueue, postgres_pool),
    )
    registry = providers.Selector(
        backends.registry,
        memory=providers.Singleton(InMemoryWorkerRegistry, clock=clock),
        postgres=providers.Singleton(PostgresWorkerRegistry, postgres_pool),
    )
    runtime = providers.Selector(
        backends.runtime,
        memory=providers.Singleton(
            InMemoryContainerRuntime, owner=settings.provided.owner, clock=clock
        ),
        docker=providers.Singleton(
            DockerContainerRuntime,
            docker_client,
            owner=settings.provided.owner,
            clock=clock,
            max_concurrency=settings.provided.docker_thread_limit,
            bridge_tag=settings.provided.docker_bridge_tag,
        ),
    )
    # In memory: images are recorded, never built (runtime=memory, tests). The Docker image
    # cache needs async set-up (base image bootstrap, wrapper wheel build), which this
    # container must not do: the serve entrypoint builds it with
    # codeyard.app.manager.images.docker_worker_images, whose WorkerImages carries it.
    image_cache = providers.Singleton(InMemoryImageCache, clock=clock)
    # The embedded, offline agent; the real CLI adapters arrive with issue #3.
    code_agent = providers.Singleton(ScriptedCodeAgent)
