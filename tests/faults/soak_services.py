"""The services of bench/soak_faults.py, each one the soak may break: a durable Redis that
worker containers reach (SIGKILL + restart on the same port, like test_redis_restart's,
but password-protected on 0.0.0.0 like ``worker_redis``), a private PostgreSQL cluster
(restarted like test_postgres_restart's), and ``codeyard serve`` killed with ``kill -9``
and started again (like test_manager_kill9). Built on the tests' own service helpers."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import docker
import redis

from codeyard.adapters.docker.image_cache import LocalImageUsage
from codeyard.app.manager.images import docker_worker_images
from codeyard.app.settings import Settings
from codeyard.domain.container import LABEL_OWNER, LABEL_WORKER, ImageRef
from tests import services
from tests.e2e.serve_support import Serve, serving
from tests.integration.manager_support import (
    BUILD_TIMEOUT_S,
    CLAUDE_SPEC,
    drop_stale_worker_images,
)
from tests.services.common import stop_process
from tests.services.worker_redis import WorkerRedisServer, start_worker_redis


@dataclass
class DurableWorkerRedis:
    """A :class:`WorkerRedisServer` switched to an fsync-always append-only file, so what
    it acknowledged survives :meth:`crash_restart` and a lost entry is codeyard's fault."""

    server: WorkerRedisServer
    binary: str

    @classmethod
    def start(cls, binary: str) -> DurableWorkerRedis:
        server = start_worker_redis(binary)
        client = redis.Redis.from_url(server.endpoint.url)
        try:
            client.config_set("appendonly", "yes")
            client.config_set("appendfsync", "always")
            # The restart reads redis.conf: write the AOF settings into it.
            client.config_rewrite()
            _wait_aof_rewrite(client)
        finally:
            client.close()
        return cls(server, binary)

    @property
    def url(self) -> str:
        return self.server.endpoint.url

    def crash_restart(self, down_s: float, timeout_s: float = 15.0) -> None:
        """SIGKILL, ``down_s`` seconds down, the same config (port, folder, AOF) again."""
        stop_process(self.server.process, signal.SIGKILL)
        time.sleep(down_s)
        with (self.server.workdir / "redis.log").open("ab") as log:
            self.server.process = subprocess.Popen(
                [self.binary, str(self.server.workdir / "redis.conf")],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return
                except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                    time.sleep(0.02)
        finally:
            client.close()
        raise services.ServiceStartError(f"worker redis did not come back on {self.url}")

    def stop(self) -> None:
        self.server.stop()


def _wait_aof_rewrite(client: redis.Redis, timeout_s: float = 15.0) -> None:
    """Until the AOF base exists (turning AOF on at run time rewrites it in the background)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.05)
    raise services.ServiceStartError("redis AOF rewrite did not finish")


def private_postgres() -> services.PostgresServer:
    """A cluster of the soak alone (restarting the shared one would break other runs)."""
    bindir = services.find_postgres_bindir()
    if bindir is None:
        raise services.ServiceStartError("PostgreSQL: no initdb found")
    server = services.start_postgres(bindir)
    server.create_database("codeyard")
    return server


async def ensure_claude_image(client: docker.DockerClient) -> ImageRef:
    """The claude worker image of this checkout, built when missing (as the tests'
    ``claude_worker_image`` fixture does), so no fault lands during a build."""
    images = await docker_worker_images(Settings(), client, usage=LocalImageUsage())
    with anyio.fail_after(BUILD_TIMEOUT_S):
        ref = await images.ensure(CLAUDE_SPEC)
    await anyio.to_thread.run_sync(drop_stale_worker_images, client, images, CLAUDE_SPEC, ref)
    return ref


@dataclass
class ManagerProcess:
    """``codeyard serve`` that survives being killed: :meth:`kill9_restart` starts the next
    one with the same environment (a new log file each time)."""

    env: Mapping[str, str]
    logs: Path
    starts: int = 0
    serve: Serve | None = None
    _stack: AsyncExitStack = field(default_factory=AsyncExitStack)

    async def start(self) -> float:
        """Seconds until the new process logs that it serves."""
        began = time.monotonic()
        self.starts += 1
        log = self.logs / f"serve-{self.starts}.log"
        self.serve = await self._stack.enter_async_context(serving(dict(self.env), log))
        return time.monotonic() - began

    @property
    def pid(self) -> int:
        assert self.serve is not None
        return int(self.serve.process.pid)

    async def kill9_restart(self) -> float:
        assert self.serve is not None
        self.serve.kill9()
        await self.serve.process.wait()
        await self._stack.aclose()  # its exit sees the process gone: nothing left to stop
        self._stack = AsyncExitStack()
        return await self.start()

    async def stop(self) -> None:
        await self._stack.aclose()


class ExitWitness:
    """Worker containers of ``owner`` that exited on their own, with their last log lines,
    read at Docker's ``die`` event: the manager removes a dead worker's container within
    its watch interval, and with it the only record of why it exited. Exits 0, 137 and
    143 are left out (a clean stop, the soak's ``docker kill`` or a forced removal, a
    delete's stop). Watches from a thread of its own until :meth:`close`."""

    QUIET = frozenset({0, 137, 143})

    def __init__(self, engine: docker.DockerClient, owner: str) -> None:
        self._engine = engine
        self._events = engine.events(
            decode=True,
            filters={"type": "container", "event": "die", "label": f"{LABEL_OWNER}={owner}"},
        )
        self.exits: list[dict[str, object]] = []
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        try:
            for event in self._events:
                attributes = event.get("Actor", {}).get("Attributes", {})
                code = int(attributes.get("exitCode", -1))
                if code in self.QUIET:
                    continue
                try:
                    raw = self._engine.containers.get(event["id"]).logs(tail=20)
                    tail: str | None = raw.decode(errors="replace")
                except docker.errors.NotFound:
                    tail = None  # removed already
                when = time.strftime("%H:%M:%S", time.gmtime(int(event.get("time", 0))))
                slot = attributes.get(LABEL_WORKER)
                self.exits.append({"slot": slot, "exit_code": code, "at": when, "logs": tail})
        except (docker.errors.DockerException, OSError, ValueError):
            return  # closed (close() shuts the stream's socket)

    def close(self) -> None:
        self._events.close()
        self._thread.join(timeout=5)


def rss_mb(pid: int) -> float | None:
    """``VmRSS`` of ``pid`` in MB, None once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def owner_processes(owner: str) -> list[int]:
    """Live processes whose environment names ``owner`` (``CODEYARD_OWNER``): the soak's
    managers and anything they left behind."""
    needle = f"CODEYARD_OWNER={owner}".encode()
    found: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().split(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in environ.split(b"\0"):
            found.append(int(proc.name))
    return found
