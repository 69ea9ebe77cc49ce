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
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import anyio
import docker
import docker.errors
import docker.models.containers
import pytest

from codeyard.adapters.cli.agent import CliCodeAgent
from codeyard.adapters.docker.exec_launcher import DockerExecLauncher
from codeyard.adapters.droid import DroidOptions, DroidSpec
from codeyard.domain.agent import AgentRequest, ResultStatus
from codeyard.domain.events import AgentEvent, InitPayload, MessagePayload
from codeyard.testing.model_server import ModelServer, Scenario, Stall, Text
from codeyard.testing.model_server.tools import write_file
from tests.integration.droid_support import API_KEY, MODEL, RUN_DEADLINE_S, final_result, need_droid
from tests.services import service_unavailable

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

#: The host's glibc (Debian/Ubuntu x86-64 layout), mounted where the binary looks for it.
GLIBC_DIRS = ("/lib/x86_64-linux-gnu", "/lib64")
CLI_DIR, HOME, WORKSPACE = "/opt/droid", "/home/agent", "/workspace"


@dataclass(frozen=True)
class Worker:
    container: docker.models.containers.Container
    home: Path
    workspace: Path


@pytest.fixture
def worker(docker_client: docker.DockerClient, test_image: str, tmp_path: Path) -> Iterator[Worker]:
    binary = need_droid().resolve()
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
        spec = DroidSpec(
            DroidOptions(
                binary=f"{CLI_DIR}/{need_droid().resolve().name}",
                path="/bin:/usr/bin",
                base_url=server.bridge_base_url(),
                api_key=API_KEY,
                model=MODEL,
                workdir=WORKSPACE,
            )
        )
        launcher = DockerExecLauncher(docker_client, str(worker.container.id))
        yield CliCodeAgent(spec, launcher, worker.home, cli_home=PurePosixPath(HOME))


async def run(agent: CliCodeAgent, request: AgentRequest, cancel_on: str = "") -> list[AgentEvent]:
    events: list[AgentEvent] = []
    with anyio.fail_after(RUN_DEADLINE_S):
        async with contextlib.aclosing(agent.execute(request)) as stream:
            async for event in stream:
                events.append(event)
                if isinstance(event.payload, MessagePayload) and event.payload.role == cancel_on:
                    await agent.cancel(request.id)
    return events


def droid_processes(worker: Worker) -> list[str]:
    """Live processes in the container other than its init and ``sleep``."""
    top = worker.container.top(ps_args="-o pid,stat,args")
    rows = [dict(zip(top["Titles"], p, strict=True)) for p in top["Processes"]]
    return [r["COMMAND"] for r in rows if "droid" in r["COMMAND"] and "Z" not in r["STAT"]]


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
