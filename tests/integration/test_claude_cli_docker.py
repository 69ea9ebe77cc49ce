"""The REAL Claude Code CLI run by ``docker exec`` in a worker-like container: the same
ClaudeSpec and run loop as the local tests, through DockerExecLauncher.

The container is the local busybox test image (no registry here) with the host's glibc and
the pinned ``claude`` binary bind-mounted read-only: the binary is native and needs only
libc. Busybox ``sh`` is not a shell Claude's Bash tool accepts (it wants bash or zsh), so
the tool call here is the Write tool. The model server listens on all interfaces and is
reached over the default bridge, as a worker would reach it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import docker.models.containers
import pytest

from codeyard.adapters.claude import ClaudeConfig, ClaudeSpec
from codeyard.adapters.cli.agent import CliCodeAgent
from codeyard.domain.agent import AgentRequest, ResultStatus
from codeyard.domain.events import AgentEvent, InitPayload, MessagePayload
from codeyard.testing.model_server import ModelServer, Scenario, Stall, Text
from codeyard.testing.model_server.tools import TOOLS
from tests.integration import docker_cli_support as dock
from tests.integration.claude_support import API_KEY, assert_no_secret, need_claude
from tests.integration.cli_support import collect, final_result
from tests.integration.docker_cli_support import WORKSPACE, Worker

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CLI_DIR = "/opt/claude"


@pytest.fixture
def worker(docker_client: docker.DockerClient, test_image: str, tmp_path: Path) -> Iterator[Worker]:
    binary = need_claude().resolve()
    with dock.busybox_worker(docker_client, test_image, tmp_path, binary, CLI_DIR) as worker:
        yield worker


def agent_in(
    worker: Worker, docker_client: docker.DockerClient, scenario: Scenario
) -> contextlib.AbstractAsyncContextManager[CliCodeAgent]:
    def make_spec(server: ModelServer) -> ClaudeSpec:
        return ClaudeSpec(
            ClaudeConfig(
                binary=worker.binary,
                path="/bin:/usr/bin",
                base_url=server.bridge_base_url(),
                api_key=API_KEY,
                max_retries=0,
                workdir=WORKSPACE,
            )
        )

    return dock.exec_agent(worker, docker_client, scenario, make_spec)


async def run(
    agent: CliCodeAgent, request: AgentRequest, cancel_on_delta: bool = False
) -> list[AgentEvent]:
    async def cancel(event: AgentEvent) -> None:
        if cancel_on_delta and isinstance(event.payload, MessagePayload):
            await agent.cancel(request.id)

    return await collect(agent, request, cancel)


def claude_processes(worker: Worker) -> list[str]:
    return dock.processes_named(worker, "claude")


async def test_a_tool_call_then_resume_inside_a_container(
    worker: Worker, docker_client: docker.DockerClient
) -> None:
    target = f"{WORKSPACE}/hello.txt"
    scenario = Scenario(
        turns=[
            [Text("Writing."), TOOLS["claude"].write_file(target, "hello from a container\n")],
            [Text("Done: wrote hello.txt.")],
            [Text("I wrote hello.txt before.")],
        ]
    )
    async with agent_in(worker, docker_client, scenario) as agent:
        first_request = AgentRequest(provider="claude", prompt="create hello.txt")
        events = await run(agent, first_request)
        first = final_result(events, first_request)
        second_request = AgentRequest(
            provider="claude", prompt="what did you do?", session_id=first.session_id
        )
        second = final_result(await run(agent, second_request), second_request)
    assert first.status is ResultStatus.SUCCESS, first
    assert first.text == "Done: wrote hello.txt."
    assert first.exit_code == 0
    assert (worker.workspace / "hello.txt").read_text() == "hello from a container\n"
    (init,) = [e.payload for e in events if isinstance(e.payload, InitPayload)]
    assert init.cwd == WORKSPACE
    # The session lives in the mounted HOME, so the second exec resumed it.
    assert list((worker.home / ".claude" / "projects").glob(f"*/{first.session_id}.jsonl"))
    assert second.status is ResultStatus.SUCCESS, second
    assert second.session_id == first.session_id
    assert second.text == "I wrote hello.txt before."
    assert_no_secret(events)
    assert claude_processes(worker) == []


async def test_cancel_mid_stream_inside_a_container(
    worker: Worker, docker_client: docker.DockerClient
) -> None:
    scenario = Scenario(turns=[[Text("Let me think"), Stall()]])
    async with agent_in(worker, docker_client, scenario) as agent:
        request = AgentRequest(provider="claude", prompt="think forever")
        events = await run(agent, request, cancel_on_delta=True)
    result = final_result(events, request)
    assert result.status is ResultStatus.CANCELLED, result
    assert result.error is not None
    assert "stopped by SIGINT" in result.error
    assert result.text == "Let me think"
    assert claude_processes(worker) == []
