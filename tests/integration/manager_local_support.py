"""A worker manager on the local-process runtime: real Redis, the real Claude CLI against
the scripted model server, workers as ``codeyard-worker --standby`` processes (no Docker).

The Docker suites cover the real containers; this one makes the manager's logic (commands,
watcher, reconciler, pool) cheap to exercise.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio

from codeyard.adapters.memory.clock import SystemClock
from codeyard.adapters.memory.code_agent import ScriptedCodeAgent
from codeyard.adapters.memory.image_cache import InMemoryImageCache
from codeyard.adapters.memory.work_queue import InMemoryWorkQueue
from codeyard.adapters.memory.worker_registry import InMemoryWorkerRegistry
from codeyard.adapters.process.runtime import LocalProcessRuntime
from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.app.bootstrap import App
from codeyard.app.manager.config import ManagerConfig
from codeyard.app.manager.images import WorkerImages
from codeyard.app.manager.serve import Manager, build_manager, run_manager
from codeyard.app.settings import Settings
from codeyard.client import CodeyardClient
from codeyard.ports.credential_store import CredentialStore
from codeyard.ports.worker_credentials import WorkerCredentials
from codeyard.ports.worker_registry import WorkerRegistry
from codeyard.testing.agents import AgentBinaryMissing, agent_binary
from codeyard.testing.model_server import ModelServer
from tests.services import service_unavailable

KEY_ENV = "CODEYARD_TEST_MANAGER_API_KEY"
API_KEY = "sk-ant-codeyard-manager-51c2"


def claude_binary() -> Path:
    try:
        return agent_binary("claude")
    except AgentBinaryMissing as exc:
        service_unavailable("the claude CLI", str(exc), "scripts/install-agents claude")


def local_config(redis_url: str, server: ModelServer, owner: str, **over: Any) -> ManagerConfig:
    config = ManagerConfig(
        owner=owner,
        worker_env={
            "CODEYARD_BACKENDS__EVENT_BUS": "redis",
            "CODEYARD_REDIS_URL": redis_url,
            KEY_ENV: API_KEY,
        },
        worker_args=(
            *("--agent-binary", str(claude_binary())),
            *("--base-url", server.base_url, "--api-key-env", KEY_ENV),
        ),
        worker_executable=str(Path(sys.executable).with_name("codeyard-worker")),
        worker_workdir=None,
        heartbeat_s=0.5,
        heartbeat_timeout_s=5.0,
        watch_interval_s=0.2,
        reconcile_interval_s=3600,
        orphan_grace_s=0.0,
        create_timeout_s=5.0,
    )
    return replace(config, **over)


@dataclass
class LocalManager:
    manager: Manager
    client: CodeyardClient
    runtime: LocalProcessRuntime
    bus: RedisEventBus
    scope: anyio.CancelScope


@asynccontextmanager
async def local_manager(
    redis_url: str,
    config: ManagerConfig,
    *,
    tmp_path: Path,
    registry: WorkerRegistry | None = None,
    runtime: LocalProcessRuntime | None = None,
    remove_workers: bool = True,
    credentials: CredentialStore | None = None,
    worker_logins: WorkerCredentials | None = None,
) -> AsyncIterator[LocalManager]:
    """A serving manager (and a client) until the block ends; its workers removed after."""
    clock = SystemClock()
    runtime = runtime or LocalProcessRuntime(owner=config.owner, base_dir=str(tmp_path))
    bus = RedisEventBus.from_url(redis_url)
    app = App(
        settings=Settings(),
        clock=clock,
        event_bus=bus,
        queue=InMemoryWorkQueue(clock=clock),
        registry=registry or InMemoryWorkerRegistry(clock=clock),
        runtime=runtime,
        image_cache=InMemoryImageCache(clock=clock),
        code_agent=ScriptedCodeAgent(),
    )
    images = WorkerImages(
        InMemoryImageCache(clock=clock), base_image="local", wrapper_hash="local", ca_certs_hash=""
    )
    manager = build_manager(
        app, config, images, credentials=credentials, worker_logins=worker_logins
    )
    try:
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as scope:
                await tg.start(run_manager, manager)
                yield LocalManager(manager, CodeyardClient(bus), runtime, bus, scope)
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            if remove_workers:
                for info in await runtime.list():
                    await runtime.remove(info.id)
            await bus.aclose()


async def until(check: Callable[[], Awaitable[bool] | bool], deadline: float) -> None:
    """Poll ``check`` (state held by another process or service) until true."""
    with anyio.fail_after(deadline):
        while True:
            done = check()
            if done if isinstance(done, bool) else await done:
                return
            await anyio.sleep(0.05)


async def wait_status(client: CodeyardClient, worker_id: str, status: str, deadline: float) -> None:
    async def reached() -> bool:
        return (await client.status(worker_id)).status.value == status

    await until(reached, deadline)
