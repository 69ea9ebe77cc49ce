"""The embedded service: codeyard without any service to set up (``codeyard run``, the demo).

Workers run in containers and talk to their clients through Redis streams: a container
cannot share this process's memory. So "no Redis to run" means a PRIVATE one: this module
starts ``redis-server`` as a child process (a free port on all interfaces, so containers
reach it through their gateway, a random password, no persistence), runs a worker manager
in this process (registry and queue in memory, the local Docker engine) and removes every
worker when the block ends. Its owner id is unique per process, so two runs on one host
never take each other's containers for orphans.

``async with open_embedded(settings) as service: service.client...`` — the same client
and the same manager as against a real ``codeyard serve``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import redis.asyncio as aioredis
import structlog
from pydantic import SecretStr

from codeyard.adapters.docker.networks import remove_networks
from codeyard.app.bootstrap import open_app
from codeyard.app.credentials import open_credential_store
from codeyard.app.manager.serve import Manager, build_manager, run_manager, worker_images
from codeyard.app.manager.settings import manager_config
from codeyard.app.settings import Settings
from codeyard.client import CodeyardClient
from codeyard.domain.errors import CodeyardError, ServiceUnavailable

log = structlog.get_logger(__name__)
START_TIMEOUT_S = 15.0
CLEANUP_DEADLINE_S = 60.0


@dataclass(frozen=True)
class Embedded:
    client: CodeyardClient
    manager: Manager
    settings: Settings
    redis_url: str


@dataclass
class PrivateRedis:
    process: subprocess.Popen[bytes]
    url: str
    workdir: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


async def start_private_redis(binary: str | None = None) -> PrivateRedis:
    """A ``redis-server`` for this process only; ServiceUnavailable when none is installed."""
    found = binary or shutil.which("redis-server")
    if found is None:
        raise ServiceUnavailable(
            "the embedded mode needs redis-server (apt-get install redis-server), "
            "or point codeyard at a running service (CODEYARD_REDIS_URL / --service)",
            service="redis",
        )
    server = await anyio.to_thread.run_sync(_spawn, found)
    try:
        with anyio.fail_after(START_TIMEOUT_S):
            await _wait_ready(server)
    except BaseException:
        await anyio.to_thread.run_sync(server.stop)
        raise
    return server


def _spawn(binary: str) -> PrivateRedis:
    password, port = secrets.token_hex(16), _free_port()
    workdir = Path(tempfile.mkdtemp(prefix="codeyard-embedded-redis-"))
    config = workdir / "redis.conf"
    # The password in a file, not argv: `ps` shows argv to everyone.
    config.write_text(
        f'port {port}\nbind 0.0.0.0\nrequirepass {password}\nsave ""\n'
        f"appendonly no\ndir {workdir}\n",
        encoding="utf-8",
    )
    config.chmod(0o600)
    with (workdir / "redis.log").open("wb") as log_file:
        process = subprocess.Popen(
            [binary, str(config)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return PrivateRedis(process, f"redis://:{password}@127.0.0.1:{port}/0", workdir)


async def _wait_ready(server: PrivateRedis) -> None:
    client = aioredis.Redis.from_url(server.url, socket_connect_timeout=0.5)
    try:
        while server.process.poll() is None:
            with contextlib.suppress(OSError, aioredis.RedisError):
                if await client.ping():
                    return
            await anyio.sleep(0.05)
    finally:
        await client.aclose()
    raise ServiceUnavailable("redis-server exited at start", service="redis")


def embedded_settings(settings: Settings, redis_url: str, **manager: Any) -> Settings:
    """``settings`` turned embedded: the private Redis, memory registry/queue, Docker."""
    backends = settings.backends.model_copy(
        update={"event_bus": "redis", "queue": "memory", "registry": "memory", "runtime": "docker"}
    )
    return settings.model_copy(
        update={
            "backends": backends,
            "redis_url": SecretStr(redis_url),
            "owner": f"{settings.owner}-run-{os.getpid()}"[:128],
            # Validated (model_copy would not): plain strings become SecretStr and the like.
            "manager": type(settings.manager).model_validate(
                {**settings.manager.model_dump(), **manager}
            ),
        }
    )


@asynccontextmanager
async def open_embedded(settings: Settings, **manager: Any) -> AsyncIterator[Embedded]:
    """A private Redis and an in-process manager until the block ends (see module doc).

    ``manager``: overrides of the ``manager`` settings group (``agent_base_url=...``).
    """
    redis_server = await start_private_redis()
    try:
        local = embedded_settings(settings, redis_server.url, **manager)
        async with open_app(local) as app:
            images = await worker_images(local, app)
            # The file store when a key is configured (the same one `codeyard serve` uses).
            credentials = open_credential_store(local)
            built = build_manager(app, manager_config(local), images, credentials=credentials)
            async with anyio.create_task_group() as tg:
                await tg.start(run_manager, built)
                try:
                    yield Embedded(CodeyardClient(app.event_bus), built, local, redis_server.url)
                finally:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_DEADLINE_S):
                        await _remove_workers(built)
                        await _remove_networks(app.clients.get("docker_client"), local.owner)
                    tg.cancel_scope.cancel()
    finally:
        await anyio.to_thread.run_sync(redis_server.stop)


async def _remove_networks(client: Any, owner: str) -> None:
    """The worker networks this process made: their names hold its random ports (the model
    server's, the private Redis'), so no later run reuses them, and each one left behind
    holds one of the engine's few address pools (~30: then every network create fails)."""
    if client is None:
        return
    try:
        await remove_networks(client, owner=owner)
    except CodeyardError as exc:
        log.warning("embedded worker networks not removed", owner=owner, error=str(exc))


async def _remove_workers(manager: Manager) -> None:
    """Embedded workers never outlive the process that made them."""
    for record in await manager.app.registry.list_active():
        try:
            await manager.handler.delete(record.worker_id)
        except CodeyardError as exc:
            log.warning("embedded worker not removed", worker_id=record.worker_id, error=str(exc))
