"""Set-up shared by the faults tests that run coding tasks through :class:`TaskRunner` on
``codeyard serve``: the local forge (served over HTTP to worker containers, with a token),
the developers' script, the runner, and the wait for the owner's containers to go."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
import docker

from codeyard.adapters.forge import ForgeServer, LocalForge
from codeyard.adapters.memory.clock import SystemClock
from codeyard.app.tasks.run_tasks import Reviews, TaskRunConfig, TaskRunner
from codeyard.client import CodeyardClient
from codeyard.domain.task_run import RepoTarget
from codeyard.domain.worker import NetworkPolicy, WorkerSpec
from codeyard.testing.model_server import Delay, Scenario, Text
from codeyard.testing.model_server.tools import write_file
from tests.e2e.serve_support import owned_containers

TOKEN_ENV = "CODEYARD_GIT_TOKEN"
FORGE_TOKEN = secrets.token_hex(16)
REPO = "app"


def developer(name: str, delay_s: float) -> Scenario:
    """Writes ``app/<name>.txt`` after ``delay_s`` (the model thinking), then says done."""
    path = f"/workspace/app/{name}.txt"
    return Scenario(
        turns=[
            [Delay(delay_s), Text("Writing."), write_file("claude", path, f"{name}\n")],
            [Text(f"Done with {name}.")],
        ]
    )


@asynccontextmanager
async def serving_forge(root: Path) -> AsyncIterator[ForgeServer]:
    """The forge with repository ``app``, served on all interfaces with the token."""
    local = LocalForge(root, clock=SystemClock())
    await local.create_repo(REPO, files={"README.md": "# app\n", "app/.keep": ""})
    # All interfaces: worker containers clone and push through the host gateway.
    async with ForgeServer(local, host="0.0.0.0", token=FORGE_TOKEN) as server:
        yield server


def developer_spec(forge: ForgeServer) -> WorkerSpec:
    """Workers that reach the forge and nothing else."""
    return WorkerSpec(
        instructions="You are a careful developer.",
        network=NetworkPolicy.ALLOWLIST,
        allowed_hosts=(str(forge.port),),
    )


def task_runner(
    client: CodeyardClient, forge: ForgeServer, reviewer: Reviews, config: TaskRunConfig
) -> TaskRunner:
    """A runner on the forge's repository, workers cloning it as ``host.docker.internal``."""
    return TaskRunner(
        client,
        forge.forge,
        reviewer,
        repo=RepoTarget(
            name=REPO,
            clone_url=forge.repo_url(REPO, host="host.docker.internal"),
            token_env=TOKEN_ENV,
        ),
        spec=developer_spec(forge),
        git_token=FORGE_TOKEN,
        config=config,
    )


async def none_left(engine: docker.DockerClient, owner: str, deadline_s: float = 30) -> list[str]:
    """The owner's containers, once there are none or after ``deadline_s`` (a dead
    worker's container is removed by the manager's watcher, asynchronously)."""
    with anyio.move_on_after(deadline_s):
        # Containers of another process: nothing to wait on but polling.
        while await anyio.to_thread.run_sync(owned_containers, engine, owner):  # noqa: ASYNC110
            await anyio.sleep(0.2)
    return await anyio.to_thread.run_sync(owned_containers, engine, owner)
