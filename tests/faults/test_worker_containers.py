"""Worker containers under attack and under faults (issue #9), on the real thing: ``codeyard
serve`` on Docker, Redis and Postgres, workers running the real Claude Code CLI against the
scripted model server (see :mod:`tests.faults.container_support`).

* The hardening every worker container gets, read back with ``docker inspect``, with the
  CLI still completing a prompt and a tool call on the read-only root.
* A container OOM-killed: a failed result ``container_oom`` and a FAILED worker; a tool
  allocating past the limit alone: killed by itself, the run and the worker go on.
* A stalled model stream: the idle watchdog ends the run, the worker answers the next one.
* A full workspace (``disk_mb``): ENOSPC for the tool, nothing on the host's disk, the
  worker and the manager go on.

Each prints its figures (``-s`` shows them)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread
import docker
import pytest

from codeyard.adapters.docker._mapping import parse_time
from codeyard.domain.agent import ResultStatus
from codeyard.domain.events import ToolResultPayload
from codeyard.domain.worker import Resources, WorkerSpec, WorkerStatus
from codeyard.domain.worker_io import WorkerInput
from codeyard.testing.model_server import Scenario, Stall
from tests import services
from tests.faults.container_support import (
    ALIVE_TEXT,
    Stack,
    create,
    inspect,
    send_input,
    serving_stack,
    still_answers,
    tool_then_text,
    wait_running,
    wait_status,
    writable_layer_bytes,
)
from tests.integration.manager_support import claude_worker_image  # noqa: F401 - fixture
from tests.services.worker_redis import WorkerRedisServer

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.docker,
    pytest.mark.faults,
    pytest.mark.slow,
    pytest.mark.timeout(900),  # the first test may wait for the worker image build
]

MIB = 1024 * 1024
#: Writes where a worker may write, then where it may not (the image's own folders).
SANDBOX_PROBE = (
    "echo w > /workspace/w && echo t > /tmp/t && echo h > $HOME/h && echo writable-ok; "
    "touch /usr/local/bin/x; touch /etc/x; id -u"
)
#: Makes the container's init the OOM killer's choice (any process may raise the score of
#: one of its own user's), then allocates (and touches) 32 MiB at a time until killed.
#: Without the first step the kernel kills the allocating tool alone and the container
#: lives on (see the report in the test).
ALLOCATE = "python3 -c 'b = [b\"x\" * (32 << 20) for _ in range(10**4)]'"
OOM_TOOL = "echo 1000 > /proc/1/oom_score_adj; " + ALLOCATE
FILL_TOOL = "dd if=/dev/zero of=/workspace/fill bs=1M count=64 2>&1; df -m /workspace | tail -1"
ROUTES = {
    "[harden]": tool_then_text(SANDBOX_PROBE, "Sandbox checked."),
    "[oom]": tool_then_text(OOM_TOOL, "(never: the container is gone)"),
    "[oom-tool]": tool_then_text(ALLOCATE, "The tool was killed."),
    "[fill]": tool_then_text(FILL_TOOL, "The disk is full."),
    "[stall]": Scenario(turns=[[Stall()]]),
}


@pytest.fixture(scope="module")
async def stack(
    worker_redis_server: WorkerRedisServer,
    postgres_server: services.PostgresServer,
    docker_client: docker.DockerClient,
    claude_worker_image: object,  # noqa: F811 - the fixture imported above
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    database = services.unique_name("faults")
    postgres_server.create_database(database, template="codeyard_template")
    try:
        async with serving_stack(
            ROUTES,
            redis=worker_redis_server.next_db(),
            postgres_dsn=postgres_server.dsn(database),
            docker_client=docker_client,
            logs=tmp_path_factory.mktemp("serve"),
        ) as running:
            yield running
    finally:
        postgres_server.drop_database(database)


def _rid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def test_a_worker_container_is_hardened_and_still_runs_claude(stack: Stack) -> None:
    resources = Resources(cpus=1.5, memory_mb=1536, pids=512)
    rid = _rid("harden")
    wid = await create(
        stack, WorkerSpec(resources=resources), prompt="[harden] check the sandbox", request_id=rid
    )
    run = await stack.client.wait_run(wid, rid, timeout_s=120)
    record = await stack.client.status(wid)
    assert record.container_id is not None
    attrs = inspect(stack.docker, record.container_id)
    host, config = attrs["HostConfig"], attrs["Config"]
    outputs = [e.payload.output for e in run.events if isinstance(e.payload, ToolResultPayload)]
    assert run.result.status is ResultStatus.SUCCESS, run.result
    assert run.result.text == "Sandbox checked."
    (probe,) = outputs
    assert "writable-ok" in probe
    assert probe.count("Read-only file system") == 2, probe
    assert probe.strip().endswith("1000"), probe
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert not host.get("CapAdd")
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert config["User"] == "1000:1000"
    assert host["PidsLimit"] == 512
    assert host["Memory"] == host["MemorySwap"] == 1536 * MIB
    assert host["NanoCpus"] == 1_500_000_000
    assert host["Init"] is True
    assert host["Privileged"] is False
    assert not host.get("Devices")
    assert not host.get("Binds")
    assert set(host["Tmpfs"]) == {"/home/worker", "/tmp"}
    assert [(m["Type"], m["Destination"]) for m in attrs["Mounts"]] == [("volume", "/workspace")]
    assert not any("docker.sock" in (m.get("Source") or "") for m in attrs["Mounts"])
    assert writable_layer_bytes(stack.docker, record.container_id) < MIB
    await stack.client.delete(wid)


async def _watch_death(
    client: docker.DockerClient, container_id: str, seen: dict[str, Any]
) -> None:
    """Keep Docker's ``State`` of the container once it has ended (before the manager
    removes it)."""
    while True:
        state = (await anyio.to_thread.run_sync(inspect, client, container_id))["State"]
        if not state["Running"]:
            seen.update(state)
            return
        await anyio.sleep(0.05)


async def test_an_oom_killed_container_fails_its_run_and_its_worker(stack: Stack) -> None:
    wid = await create(stack, WorkerSpec(resources=Resources(memory_mb=640)))
    container_id = await wait_running(stack.client, wid)
    state: dict[str, Any] = {}
    rid = _rid("oom")
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch_death, stack.docker, container_id, state)
        sent = datetime.now(UTC)
        await stack.client.send(wid, "[oom] allocate", request_id=rid)
        result = await stack.client.wait_result(wid, request_id=rid, timeout_s=120)
        reported = datetime.now(UTC)
    record = await wait_status(stack.client, wid, WorkerStatus.FAILED)
    assert state["OOMKilled"] is True, state  # Docker's own verdict
    assert state["ExitCode"] == 137
    assert result.status is ResultStatus.ERROR
    assert result.terminal_reason == "container_oom"
    assert result.exit_code == 137
    assert record.error == "container_oom"
    died = parse_time(state["FinishedAt"])
    assert died is not None
    print(
        f"OOM: prompt -> container dead {(died - sent).total_seconds():.2f} s,"
        f" dead -> failed result at the client {(reported - died).total_seconds():.2f} s"
    )


async def test_a_tool_past_the_memory_limit_is_killed_alone(stack: Stack) -> None:
    rid = _rid("oom-tool")
    wid = await create(
        stack,
        WorkerSpec(resources=Resources(memory_mb=640)),
        prompt="[oom-tool] go",
        request_id=rid,
    )
    run = await stack.client.wait_run(wid, rid, timeout_s=120)
    after = await still_answers(stack, wid)
    record = await stack.client.status(wid)
    (tool,) = [e.payload for e in run.events if isinstance(e.payload, ToolResultPayload)]
    assert run.result.status is ResultStatus.SUCCESS, run.result
    assert tool.is_error
    assert "137" in tool.output, tool.output  # SIGKILL: the kernel's OOM killer
    assert after.status is ResultStatus.SUCCESS
    assert record.status is WorkerStatus.RUNNING
    print(f"OOM of a tool alone: {tool.output.strip()[-80:]!r}; the worker answers on")
    await stack.client.delete(wid)


async def test_a_stalled_model_stream_hits_the_idle_watchdog_and_the_worker_lives(
    stack: Stack,
) -> None:
    wid = await create(stack, WorkerSpec())
    await wait_running(stack.client, wid)
    rid = _rid("stall")
    began = time.monotonic()
    message = WorkerInput(prompt="[stall] think", request_id=rid, idle_timeout_s=3, timeout_s=60)
    await send_input(stack.bus, wid, message)
    result = await stack.client.wait_result(wid, request_id=rid, timeout_s=60)
    stalled = time.monotonic() - began
    began = time.monotonic()
    after = await still_answers(stack, wid)
    answered = time.monotonic() - began
    record = await stack.client.status(wid)
    assert result.status is ResultStatus.TIMEOUT, result
    assert result.terminal_reason == "idle_timeout"
    assert 3 <= stalled < 20
    assert after.status is ResultStatus.SUCCESS, after
    assert after.text == ALIVE_TEXT
    assert record.status is WorkerStatus.RUNNING
    print(f"stall: idle_timeout_s=3 -> timeout result {stalled:.2f} s after the prompt;")
    print(f"  next prompt answered in {answered:.2f} s")
    await stack.client.delete(wid)


async def test_a_full_workspace_is_enospc_for_the_tool_only(stack: Stack) -> None:
    rid = _rid("fill")
    wid = await create(
        stack,
        WorkerSpec(resources=Resources(disk_mb=32)),
        prompt="[fill] fill the disk",
        request_id=rid,
    )
    began = time.monotonic()
    run = await stack.client.wait_run(wid, rid, timeout_s=120)
    filled = time.monotonic() - began
    record = await stack.client.status(wid)
    assert record.container_id is not None
    attrs = inspect(stack.docker, record.container_id)
    layer = writable_layer_bytes(stack.docker, record.container_id)
    after = await still_answers(stack, wid)
    outputs = [e.payload.output for e in run.events if isinstance(e.payload, ToolResultPayload)]
    (tool,) = outputs
    assert run.result.status is ResultStatus.SUCCESS, run.result
    assert "No space left on device" in tool, tool
    assert tool.split()[-5:-4] == ["32"], tool  # df: a 32 MiB filesystem...
    assert tool.split()[-3:-2] == ["0"], tool  # ...with 0 MiB available
    assert "size=32m" in attrs["HostConfig"]["Tmpfs"]["/workspace"]
    assert layer < MIB  # the 32 MiB went to the tmpfs, nothing to the host's disk
    assert after.status is ResultStatus.SUCCESS, after
    assert stack.serve.process.returncode is None
    print(
        f"disk full: run with ENOSPC done in {filled:.2f} s;"
        f" the container's layer on the host's disk: {layer} bytes"
    )
    await stack.client.delete(wid)
