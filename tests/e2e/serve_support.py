"""``codeyard serve`` as a real subprocess, configured like an operator would: CODEYARD_*
environment, Redis reachable from containers (``worker_redis``), Postgres, Docker, the
scripted model server bound to all interfaces so worker containers reach it."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import docker

from codeyard.domain.container import LABEL_OWNER
from codeyard.testing.model_server import ModelServer

CODEYARD = str(Path(sys.executable).with_name("codeyard"))
READY_LINE = "worker manager serving"
API_KEY = "sk-ant-codeyard-e2e-90d1"


def serve_env(
    *,
    owner: str,
    redis_url: str,
    postgres_dsn: str,
    server: ModelServer,
    **extra: str,
) -> dict[str, str]:
    """The environment of one ``codeyard serve`` (``extra``: more CODEYARD_* values)."""
    port = server.base_url.rsplit(":", 1)[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith("CODEYARD_")}
    env.update(
        {
            "CODEYARD_BACKENDS__EVENT_BUS": "redis",
            "CODEYARD_BACKENDS__QUEUE": "postgres",
            "CODEYARD_BACKENDS__REGISTRY": "postgres",
            "CODEYARD_BACKENDS__RUNTIME": "docker",
            "CODEYARD_REDIS_URL": redis_url,
            "CODEYARD_POSTGRES_DSN": postgres_dsn,
            "CODEYARD_OWNER": owner,
            "CODEYARD_MANAGER__AGENT_BASE_URL": f"http://127.0.0.1:{port}",
            "CODEYARD_MANAGER__AGENT_API_KEY": API_KEY,
            "CODEYARD_MANAGER__HEARTBEAT_S": "1",
            "CODEYARD_MANAGER__WATCH_INTERVAL_S": "0.5",
            "CODEYARD_MANAGER__ORPHAN_GRACE_S": "5",
            "CODEYARD_WORKER_HEARTBEAT_TIMEOUT_S": "15",
            **extra,
        }
    )
    return env


@dataclass
class Serve:
    process: anyio.abc.Process
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_ready(self, deadline_s: float = 900.0) -> None:
        """Until the service logs that it serves (the first start may build the image)."""
        with anyio.fail_after(deadline_s):
            while READY_LINE not in self.output():
                if self.process.returncode is not None:
                    msg = f"codeyard serve exited {self.process.returncode}:\n{self.output()}"
                    raise AssertionError(msg)
                await anyio.sleep(0.1)

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)


@asynccontextmanager
async def serving(env: dict[str, str], log: Path, *, ready: bool = True) -> AsyncIterator[Serve]:
    """A ``codeyard serve`` process; SIGTERM (then SIGKILL) at the end if still alive."""
    with log.open("ab") as out:
        process = await anyio.open_process(
            [CODEYARD, "serve"], env=env, stdout=out, stderr=out, stdin=None
        )
    serve = Serve(process, log)
    try:
        if ready:
            await serve.wait_ready()
        yield serve
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(20):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def owned_containers(client: docker.DockerClient, owner: str) -> list[str]:
    found = client.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})
    return [str(c.id) for c in found]


def remove_owned(client: docker.DockerClient, owner: str) -> None:
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"}):
        container.remove(force=True)
