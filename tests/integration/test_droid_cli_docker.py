"""The REAL Droid CLI run by ``docker exec`` in a worker-like container: the same DroidSpec
and run loop as the local tests, through DockerExecLauncher.

The container is the local busybox test image (no registry here) with the host's glibc and
the pinned ``droid`` binary (native, needs only libc) bind-mounted read-only; HOME and the
workspace are mounted from the host, so the run loop writes settings.json where the CLI
reads it. Droid's Execute tool needs bash, which busybox lacks: the tool call here is the
Create tool. The model server listens on all interfaces and is reached over the default
bridge, as a worker would reach it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import docker.models.containers
import pytest

from codeyard.adapters.cli.agent import CliCodeAgent
from codeyard.adapters.droid import DroidOptions, DroidSpec
from codeyard.domain.agent import AgentRequest, ResultStatus
from codeyard.domain.events import AgentEvent, InitPayload, MessagePayload
from codeyard.testing.model_server import ModelServer, Scenario, Stall, Text
from codeyard.testing.model_server.tools import write_file
from tests.integration import docker_cli_support as dock
from tests.integration.cli_support import collect, final_result
from tests.integration.docker_cli_support import WORKSPACE, Worker
from tests.integration.droid_support import API_KEY, MODEL, need_droid

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CLI_DIR = "/opt/droid"


@pytest.fixture
def worker(docker_client: docker.DockerClient, test_image: str, tmp_path: Path) -> Iterator[Worker]:
    binary = need_droid().resolve()
    with dock.busybox_worker(docker_client, test_image, tmp_path, binary, CLI_DIR) as worker:
        yield worker


def agent_in(
    worker: Worker, docker_client: docker.DockerClient, scenario: Scenario
) -> contextlib.AbstractAsyncContextManager[CliCodeAgent]:
    def make_spec(server: ModelServer) -> DroidSpec:
        return DroidSpec(
            DroidOptions(
                binary=worker.binary,
                path="/bin:/usr/bin",
                base_url=server.bridge_base_url(),
                api_key=API_KEY,
                model=MODEL,
                workdir=WORKSPACE,
            )
        )

    return dock.exec_agent(worker, docker_client, scenario, make_spec)


async def run(agent: CliCodeAgent, request: AgentRequest, cancel_on: str = "") -> list[AgentEvent]:
    async def cancel(event: AgentEvent) -> None:
        if isinstance(event.payload, MessagePayload) and event.payload.role == cancel_on:
            await agent.cancel(request.id)

    return await collect(agent, request, cancel)


def droid_processes(worker: Worker) -> list[str]:
    return dock.processes_named(worker, "droid")


async def test_a_tool_call_inside_a_container(
    worker: Worker, docker_client: docker.DockerClient
) -> None:
    target = f"{WORKSPACE}/hello.txt"
    scenario = Scenario(
        turns=[
            [Text("Writing."), write_file("droid", target, "hello from a container\n")],
            [Text("Done: wrote hello.txt.")],
        ]
    )
    async with agent_in(worker, docker_client, scenario) as agent:
        request = AgentRequest(provider="droid", prompt="create hello.txt")
        events = await run(agent, request)
    result = final_result(events, request)
    assert result.status is ResultStatus.SUCCESS, result
    assert result.text == "Done: wrote hello.txt."
    assert result.exit_code == 0
    assert (worker.workspace / "hello.txt").read_text() == "hello from a container\n"
    (init,) = [e.payload for e in events if isinstance(e.payload, InitPayload)]
    assert (init.cwd, init.model) == (WORKSPACE, "custom:codeyard-0")
    # Droid kept the session in the mounted HOME (the run loop wrote its settings there).
    assert list((worker.home / ".factory" / "sessions").glob(f"*/{result.session_id}.jsonl"))
    for event in events:
        assert API_KEY not in event.model_dump_json()
    assert droid_processes(worker) == []


async def test_cancel_mid_stream_inside_a_container(
    worker: Worker, docker_client: docker.DockerClient
) -> None:
    scenario = Scenario(turns=[[Text("Let me think"), Stall()]])
    async with agent_in(worker, docker_client, scenario) as agent:
        request = AgentRequest(provider="droid", prompt="think forever")
        events = await run(agent, request, cancel_on="user")
    result = final_result(events, request)
    assert result.status is ResultStatus.CANCELLED, result
    assert "stopped by SIGKILL" in (result.error or "")
    assert droid_processes(worker) == []
