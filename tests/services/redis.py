"""An ephemeral ``redis-server`` without persistence on a free local port."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.services.common import ServiceStartError, free_port, stop_process, tail


@dataclass
class RedisServer:
    """An ephemeral ``redis-server`` without persistence on a free local port."""

    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    started_in: float

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM)
        shutil.rmtree(self.workdir, ignore_errors=True)


def find_redis_server() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(p, os.X_OK)),
        None,
    )


def start_redis(binary: str, timeout: float = 15.0, attempts: int = 3) -> RedisServer:
    last_error = "not started"
    for _ in range(attempts):
        began = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="codeyard-redis-"))
        port = free_port()
        logfile = workdir / "redis.log"
        with logfile.open("wb") as log:
            proc = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = RedisServer(port, workdir, proc, 0.0)
        client = redis.Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=1)
        try:
            deadline = began + timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
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
    raise ServiceStartError(f"redis-server did not answer PING ({last_error})")
