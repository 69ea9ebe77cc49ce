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
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import anyio
import docker
import docker.errors
import docker.models.containers
import pytest

from codeyard.adapters.claude import ClaudeConfig, ClaudeSpec
from codeyard.adapters.cli.agent import CliCodeAgent
from codeyard.adapters.docker.exec_launcher import DockerExecLauncher
from codeyard.domain.agent import AgentRequest, ResultStatus
from codeyard.domain.events import AgentEvent, InitPayload, MessagePayload
from codeyard.testing.model_server import ModelServer, Scenario, Stall, Text
from codeyard.testing.model_server.tools import TOOLS
from tests.integration.claude_support import API_KEY, RUN_DEADLINE_S, assert_no_secret, need_claude
from tests.integration.codex_gemini_support import final_result
from tests.services import service_unavailable

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

#: The host's glibc (Debian/Ubuntu x86-64 layout), mounted where the binary looks for it.
GLIBC_DIRS = ("/lib/x86_64-linux-gnu", "/lib64")
CLI_DIR, HOME, WORKSPACE = "/opt/claude", "/home/agent", "/workspace"


@dataclass(frozen=True)
class Worker:
    container: docker.models.containers.Container
    home: Path
    workspace: Path


@pytest.fixture
def worker(docker_client: docker.DockerClient, test_image: str, tmp_path: Path) -> Iterator[Worker]:
    binary = need_claude().resolve()
    missing = [d for d in GLIBC_DIRS if not Path(d).is_dir()]
    if missing:
        service_unavailable("a glibc to mount", f"{missing} missing on this host", "x86-64 Debian")
    home, workspace = tmp_path / "home", tmp_path / "workspace"
    home.mkdir()
    workspace.mkdir()
    volumes = {d: {"bind": d, "mode": "ro"} for d in GLIBC_DIRS}
    volumes[str(binary.parent)] = {"bind": CLI_DIR, "mode": "ro"}
    volumes[str(home)] = {"bind": HOME, "mode": "rw"}
    volumes[str(workspace)] = {"bind": WORKSPACE, "mode": "rw"}
    container = docker_client.containers.run(
        test_image,
        ["sleep", "3600"],
        detach=True,
        init=True,
        volumes=volumes,
        labels={"dev.codeyard.test": "1"},
    )
    try:
        yield Worker(container, home, workspace)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


@contextlib.asynccontextmanager
async def agent_in(
    worker: Worker, docker_client: docker.DockerClient, scenario: Scenario
) -> AsyncIterator[CliCodeAgent]:
    async with ModelServer(scenario, host="0.0.0.0") as server:
        spec = ClaudeSpec(
            ClaudeConfig(
                binary=f"{CLI_DIR}/{need_claude().resolve().name}",
                path="/bin:/usr/bin",
                base_url=server.bridge_base_url(),
                api_key=API_KEY,
                max_retries=0,
                workdir=WORKSPACE,
            )
        )
        launcher = DockerExecLauncher(docker_client, str(worker.container.id))
        yield CliCodeAgent(spec, launcher, worker.home, cli_home=PurePosixPath(HOME))


async def run(
    agent: CliCodeAgent, request: AgentRequest, cancel_on_delta: bool = False
) -> list[AgentEvent]:
    events: list[AgentEvent] = []
    with anyio.fail_after(RUN_DEADLINE_S):
        async with contextlib.aclosing(agent.execute(request)) as stream:
            async for event in stream:
                events.append(event)
                if cancel_on_delta and isinstance(event.payload, MessagePayload):
                    await agent.cancel(request.id)
    return events


def claude_processes(worker: Worker) -> list[str]:
    """Live processes in the container other than its init and ``sleep``."""
    top = worker.container.top(ps_args="-o pid,stat,args")
    rows = [dict(zip(top["Titles"], p, strict=True)) for p in top["Processes"]]
    return [r["COMMAND"] for r in rows if "claude" in r["COMMAND"] and "Z" not in r["STAT"]]


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
