"""An ephemeral, password-protected ``redis-server`` that worker containers can reach.

The plain ``redis_url`` server binds 127.0.0.1, which a container never reaches. This one
binds 0.0.0.0 (so the Docker bridge gateway address, ``host-gateway``, reaches it) and
therefore requires a random password: anything on the machine's networks can connect.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import redis

from tests.services.common import ServiceStartError, stop_process, tail

# Enough databases that consecutive tests get distinct indexes (see WorkerRedisServer.next_db).
DATABASES = 64


@dataclass(frozen=True)
class WorkerRedis:
    """Where to reach the worker Redis: host-side ``url`` or ``container_url(host)``."""

    port: int
    password: str
    db: int = 0

    @property
    def url(self) -> str:
        """URL for clients on this machine (``redis://:PASS@127.0.0.1:PORT/DB``)."""
        return self.container_url("127.0.0.1")

    def container_url(self, host: str) -> str:
        """The same URL with another host, e.g. ``"host.docker.internal"`` in a container."""
        return f"redis://:{self.password}@{host}:{self.port}/{self.db}"

    def with_db(self, db: int) -> WorkerRedis:
        return replace(self, db=db)


@dataclass
class WorkerRedisServer:
    """The process behind a :class:`WorkerRedis`; ``stop()`` ends it and removes its dir."""

    endpoint: WorkerRedis
    workdir: Path
    process: subprocess.Popen[bytes]
    started_in: float
    _next_db: int = 0

    def next_db(self) -> WorkerRedis:
        """An endpoint on the next database index (cycling), flushed before it is returned.

        Distinct indexes for consecutive tests keep a task leaked by one test (still
        writing after its end) out of the next test's keys.
        """
        endpoint = self.endpoint.with_db(self._next_db)
        self._next_db = (self._next_db + 1) % DATABASES
        client = redis.Redis.from_url(endpoint.url)
        try:
            client.flushdb()
        finally:
            client.close()
        return endpoint

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM)
        shutil.rmtree(self.workdir, ignore_errors=True)


def free_port_all_interfaces() -> int:
    """A TCP port free on 0.0.0.0 right now (the caller retries if it loses a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))  # all interfaces: containers must reach it
        port: int = sock.getsockname()[1]
        return port


def start_worker_redis(binary: str, timeout: float = 15.0, attempts: int = 3) -> WorkerRedisServer:
    """Start ``redis-server`` on 0.0.0.0 with a random ``requirepass``; wait for PING."""
    last_error = "not started"
    for _ in range(attempts):
        began = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="codeyard-worker-redis-"))
        endpoint = WorkerRedis(port=free_port_all_interfaces(), password=secrets.token_hex(16))
        # The password goes in a config file, not argv: `ps` shows argv to every user.
        config = workdir / "redis.conf"
        config.write_text(
            f"port {endpoint.port}\n"
            "bind 0.0.0.0\n"
            # Protected mode only refuses clients when no password is set; with requirepass
            # it never engages, so keep the safe default on.
            "protected-mode yes\n"
            f"requirepass {endpoint.password}\n"
            f"databases {DATABASES}\n"
            'save ""\n'
            "appendonly no\n"
            f"dir {workdir}\n"
        )
        config.chmod(0o600)
        logfile = workdir / "redis.log"
        with logfile.open("wb") as log:
            proc = subprocess.Popen(
                [binary, str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = WorkerRedisServer(endpoint, workdir, proc, 0.0)
        client = redis.Redis.from_url(endpoint.url, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            deadline = began + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    if client.ping():
                        server.started_in = time.monotonic() - began
                        return server
                except redis.exceptions.ConnectionError:
                    time.sleep(0.02)
        finally:
            client.close()
        last_error = f"exit code {proc.poll()}; log:\n{tail(logfile)}"
        server.stop()
    raise ServiceStartError(f"worker redis-server did not answer PING ({last_error})")
