"""Every adapter structurally conforms to its port.

The assignments below are checked statically by ``mypy --strict`` (adapters do not inherit
from the Protocols, so this is where a signature drift shows up); the test repeats the
check at runtime for method presence. Behaviour is the contract suites' job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from codeyard.adapters.docker import (
    DockerContainerRuntime,
    DockerExecLauncher,
    DockerImageBuilder,
    DockerImageCache,
)
from codeyard.adapters.docker.image_cache import LocalImageUsage
from codeyard.adapters.memory import (
    InMemoryContainerRuntime,
    InMemoryEventBus,
    InMemoryImageCache,
    InMemoryWorkerRegistry,
    InMemoryWorkQueue,
    ManualClock,
    ScriptedCodeAgent,
    SystemClock,
)
from codeyard.adapters.postgres import PostgresWorkerRegistry, PostgresWorkQueue
from codeyard.adapters.process.local import LocalProcessLauncher
from codeyard.adapters.process.runtime import LocalProcessRuntime
from codeyard.adapters.redis import RedisEventBus
from codeyard.ports import (
    Clock,
    CodeAgent,
    ContainerRuntime,
    EventBus,
    ImageCache,
    ProcessLauncher,
    WorkerRegistry,
    WorkQueue,
)

if TYPE_CHECKING:
    import asyncpg
    import docker
    import redis.asyncio as aioredis

    def _static_conformance(
        pool: asyncpg.Pool[asyncpg.Record], client: aioredis.Redis, engine: docker.DockerClient
    ) -> None:
        # mypy --strict fails the build here if an adapter drifts from its port.
        clocks: list[Clock] = [SystemClock(), ManualClock()]
        agents: list[CodeAgent] = [ScriptedCodeAgent()]
        runtimes: list[ContainerRuntime] = [
            InMemoryContainerRuntime(owner="o"),
            DockerContainerRuntime(engine, owner="o"),
            LocalProcessRuntime(owner="o"),
        ]
        buses: list[EventBus] = [InMemoryEventBus(), RedisEventBus(client)]
        caches: list[ImageCache] = [
            InMemoryImageCache(),
            DockerImageCache(engine, DockerImageBuilder(engine), LocalImageUsage()),
        ]
        launchers: list[ProcessLauncher] = [
            LocalProcessLauncher(),
            DockerExecLauncher(engine, "container-id"),
        ]
        queues: list[WorkQueue] = [InMemoryWorkQueue(), PostgresWorkQueue(pool)]
        registries: list[WorkerRegistry] = [InMemoryWorkerRegistry(), PostgresWorkerRegistry(pool)]
        del clocks, agents, runtimes, buses, caches, launchers, queues, registries


@pytest.mark.parametrize(
    ("adapter", "port"),
    [
        (SystemClock, Clock),
        (ManualClock, Clock),
        (ScriptedCodeAgent, CodeAgent),
        (InMemoryContainerRuntime, ContainerRuntime),
        (DockerContainerRuntime, ContainerRuntime),
        (LocalProcessRuntime, ContainerRuntime),
        (LocalProcessLauncher, ProcessLauncher),
        (DockerExecLauncher, ProcessLauncher),
        (DockerImageCache, ImageCache),
        (InMemoryEventBus, EventBus),
        (RedisEventBus, EventBus),
        (InMemoryImageCache, ImageCache),
        (InMemoryWorkQueue, WorkQueue),
        (PostgresWorkQueue, WorkQueue),
        (InMemoryWorkerRegistry, WorkerRegistry),
        (PostgresWorkerRegistry, WorkerRegistry),
    ],
)
def test_adapter_has_every_port_method(adapter: type, port: type) -> None:
    members = {name for name in vars(port) if not name.startswith("_")}
    assert members, f"{port.__name__} declares nothing"
    missing = sorted(name for name in members if not hasattr(adapter, name))
    assert not missing, f"{adapter.__name__} lacks {missing} of {port.__name__}"
    # Conformance is structural: adapters never inherit from the Protocols.
    assert port not in adapter.__mro__
