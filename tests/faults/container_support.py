"""One ``codeyard serve`` (a subprocess) on Docker, Redis and Postgres for the whole module,
with one scripted model server whose :class:`Router` gives each fault its own script: a
prompt carrying ``[oom]`` gets the OOM script, and so on. Conversations without a marker
(the follow-up prompts proving a worker survived) get :data:`ALIVE`."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import docker

from codeyard.adapters.docker._mapping import parse_time
from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.client import CodeyardClient
from codeyard.domain.agent import AgentResult
from codeyard.domain.streams import worker_input_stream
from codeyard.domain.worker import WorkerRecord, WorkerSpec, WorkerStatus
from codeyard.domain.worker_io import INPUT_FIELD, WorkerInput
from codeyard.testing.model_server import ModelServer, Scenario, Text
from codeyard.testing.model_server.router import Router
from codeyard.testing.model_server.tools import TOOLS
from tests.e2e.serve_support import Serve, remove_owned, serve_env, serving
from tests.services.worker_redis import WorkerRedis

ALIVE_TEXT = "Still here."
ALIVE = Scenario(turns=[[Text(ALIVE_TEXT)]], exhausted=[Text(ALIVE_TEXT)])
BASH = TOOLS["claude"].shell
CREATE_TIMEOUT_S = 900


def tool_then_text(command: str, text: str) -> Scenario:
    """One shell tool call, then ``text`` (whatever the tool said)."""
    return Scenario(turns=[[BASH(command)], [Text(text)]], exhausted=[Text(text)])


@dataclass
class Stack:
    """A serving manager, a client on its Redis, the engine, the model server."""

    serve: Serve
    client: CodeyardClient
    bus: RedisEventBus
    docker: docker.DockerClient
    model: ModelServer
    owner: str


@asynccontextmanager
async def serving_stack(
    routes: Mapping[str, Scenario],
    *,
    redis: WorkerRedis,
    postgres_dsn: str,
    docker_client: docker.DockerClient,
    logs: Path,
) -> AsyncIterator[Stack]:
    """The model server, ``codeyard serve`` and a client; the owner's containers removed after."""
    owner = "faults-" + uuid.uuid4().hex[:8]
    try:
        async with ModelServer(Router(routes, default=ALIVE), host="0.0.0.0") as model:
            env = serve_env(
                owner=owner, redis_url=redis.url, postgres_dsn=postgres_dsn, server=model
            )
            async with (
                serving(env, logs / "serve.log") as serve,
                CodeyardClient.connect(redis.url) as client,
            ):
                bus = RedisEventBus.from_url(redis.url)
                try:
                    yield Stack(serve, client, bus, docker_client, model, owner)
                finally:
                    await bus.aclose()
    finally:
        remove_owned(docker_client, owner)


async def create(
    stack: Stack, spec: WorkerSpec, *, prompt: str | None = None, request_id: str | None = None
) -> str:
    """A new worker's id. The reply may wait for the manager's image build: the image is
    named by a hash of this checkout's sources, built anew after any change."""
    created = await stack.client.create(
        spec, prompt=prompt, request_id=request_id, timeout_s=CREATE_TIMEOUT_S
    )
    return created.worker_id


async def send_input(bus: RedisEventBus, worker_id: str, message: WorkerInput) -> None:
    """A prompt straight onto the worker's input stream, with options the client's
    ``send`` does not expose (``idle_timeout_s``)."""
    await bus.publish(worker_input_stream(worker_id), {INPUT_FIELD: message.model_dump_json()})


async def still_answers(stack: Stack, worker_id: str) -> AgentResult:
    """A fresh-session prompt (no marker: :data:`ALIVE`) and its result."""
    sent = await stack.client.send(worker_id, "are you alive?", new_session=True)
    return await stack.client.wait_result(worker_id, request_id=sent.request_id, timeout_s=60)


async def wait_running(client: CodeyardClient, worker_id: str, deadline_s: float = 60) -> str:
    """The container id once the worker runs."""
    with anyio.fail_after(deadline_s):
        while True:
            record = await client.status(worker_id)
            if record.status.value == "running" and record.container_id is not None:
                return record.container_id
            await anyio.sleep(0.1)


async def wait_status(
    client: CodeyardClient, worker_id: str, status: WorkerStatus, deadline_s: float = 30
) -> WorkerRecord:
    """The worker's record once the manager (another process) gives it ``status``."""
    with anyio.fail_after(deadline_s):
        record = await client.status(worker_id)
        while record.status is not status:  # polls: no event to wait on across processes
            await anyio.sleep(0.1)
            record = await client.status(worker_id)
    return record


def inspect(client: docker.DockerClient, container_id: str) -> dict[str, Any]:
    attrs: dict[str, Any] = client.api.inspect_container(container_id)
    return attrs


def writable_layer_bytes(client: docker.DockerClient, container_id: str) -> int:
    """What the container wrote to its own layer on the host's disk (``SizeRw``)."""
    (row,) = client.api.containers(all=True, filters={"id": container_id}, size=True)
    return int(row.get("SizeRw") or 0)


def seconds_since(docker_time: str) -> float:
    """Wall-clock seconds from a Docker timestamp (``State.FinishedAt``) until now."""
    then = parse_time(docker_time)
    assert then is not None, docker_time
    return (datetime.now(UTC) - then).total_seconds()


def monotonic_ms(since: float) -> float:
    return (time.monotonic() - since) * 1000
