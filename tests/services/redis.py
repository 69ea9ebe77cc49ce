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
    #: How the server was started, for :meth:`restart`.
    argv: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_process(self.process, signal.SIGTERM)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, *, kill: bool = False, down_s: float = 0.0, timeout: float = 15.0) -> None:
        """Stop the server (SIGKILL with ``kill``: a crash, else a clean SIGTERM), stay down
        ``down_s`` seconds, start it again on the same port and folder. Only a server
        started with ``durable=True`` keeps its data across this."""
        stop_process(self.process, signal.SIGKILL if kill else signal.SIGTERM)
        time.sleep(down_s)
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        if not _answers(self, time.monotonic() + timeout):
            raise ServiceStartError(
                f"redis-server did not come back:\n{tail(self.workdir / 'redis.log')}"
            )


def find_redis_server() -> str | None:
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server") if os.access(p, os.X_OK)),
        None,
    )


def _answers(server: RedisServer, deadline: float) -> bool:
    """Wait until ``server`` answers PING (False: it exited or the deadline passed)."""
    client = redis.Redis.from_url(server.url, socket_connect_timeout=0.5, socket_timeout=1)
    try:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                return False
            try:
                if client.ping():
                    return True
            except redis.exceptions.ConnectionError:
                time.sleep(0.02)
        return False
    finally:
        client.close()


def start_redis(
    binary: str, timeout: float = 15.0, attempts: int = 3, *, durable: bool = False
) -> RedisServer:
    """``durable``: append-only file fsynced on every write, so that what the server
    acknowledged survives a restart or a crash (fault tests restart it mid-run)."""
    persistence = ("--appendonly", "yes", "--appendfsync", "always") if durable else ()
    last_error = "not started"
    for _ in range(attempts):
        began = time.monotonic()
        workdir = Path(tempfile.mkdtemp(prefix="codeyard-redis-"))
        port = free_port()
        logfile = workdir / "redis.log"
        argv = (
            binary,
            *("--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *(persistence or ("--appendonly", "no")),
            *("--dir", str(workdir)),
        )
        with logfile.open("wb") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        server = RedisServer(port, workdir, proc, 0.0, argv)
        if _answers(server, began + timeout):
            server.started_in = time.monotonic() - began
            return server
        last_error = f"exit code {proc.poll()}; log:\n{tail(logfile)}"
        server.stop()
    raise ServiceStartError(f"redis-server did not answer PING ({last_error})")
