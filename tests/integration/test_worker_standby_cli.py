"""``codeyard worker --standby`` as a subprocess: real Redis streams, the REAL Claude Code
CLI, the scripted model server. The manager's view: publish an assignment on
``worker:standby:<slot>``, then talk to the worker it names like any other.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import anyio.abc
import pytest

from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.domain.agent import ResultStatus
from codeyard.domain.events import AgentEvent, LifecyclePayload, ResultPayload, ToolResultPayload
from codeyard.domain.streams import (
    parse_stream_id,
    standby_stream,
    worker_input_stream,
    worker_output_stream,
)
from codeyard.domain.worker_io import EVENT_FIELD, INPUT_FIELD
from codeyard.testing.model_server import ModelServer, Scenario, Text
from codeyard.testing.model_server.tools import TOOLS
from tests.integration.test_worker_wrapper_cli import claude_binary

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SLOT = "slot-int-1"
WORKER = "w-std-int-1"
KEY_ENV = "CODEYARD_TEST_WORKER_API_KEY"
API_KEY = "sk-ant-codeyard-standby-2c9d"


class Manager:
    def __init__(self, bus: RedisEventBus, process: anyio.abc.Process) -> None:
        self.bus = bus
        self.process = process

    async def assign(self, **assignment: object) -> str:
        message = json.dumps({"type": "assign", "worker_id": WORKER, **assignment})
        return await self.bus.publish(standby_stream(SLOT), {INPUT_FIELD: message})

    async def send(self, message: dict[str, object]) -> None:
        await self.bus.publish(worker_input_stream(WORKER), {INPUT_FIELD: json.dumps(message)})

    async def entries(self) -> list[tuple[str, AgentEvent]]:
        found = await self.bus.read(worker_output_stream(WORKER), count=10_000)
        return [(e.id, AgentEvent.model_validate_json(e.fields[EVENT_FIELD])) for e in found]

    async def wait_for(
        self, check: Callable[[list[AgentEvent]], bool], deadline_s: float = 60.0
    ) -> list[tuple[str, AgentEvent]]:
        with anyio.fail_after(deadline_s):
            while True:
                entries = await self.entries()
                if check([event for _, event in entries]):
                    return entries
                if self.process.returncode is not None:
                    pytest.fail(f"the worker exited with {self.process.returncode}: {entries}")
                await anyio.sleep(0.02)


def states(events: list[AgentEvent]) -> list[str]:
    return [e.payload.state for e in events if isinstance(e.payload, LifecyclePayload)]


def results(events: list[AgentEvent]) -> list[ResultPayload]:
    return [e.payload for e in events if isinstance(e.payload, ResultPayload)]


@contextlib.asynccontextmanager
async def standby_worker(
    redis_url: str, server: ModelServer, tmp_path: Path
) -> AsyncIterator[Manager]:
    """A standby worker process, returned once it waits on its stream (warm)."""
    argv = [
        str(Path(sys.executable).with_name("codeyard")),
        *("worker", "--standby", SLOT, "--provider", "claude"),
        *("--workdir", str(tmp_path / "work"), "--home", str(tmp_path / "home")),
        *("--heartbeat-s", "30", "--agent-binary", str(claude_binary())),
        *("--base-url", server.base_url, "--api-key-env", KEY_ENV),
    ]
    env = {
        **os.environ,
        "CODEYARD_BACKENDS__EVENT_BUS": "redis",
        "CODEYARD_REDIS_URL": redis_url,
        KEY_ENV: API_KEY,
    }
    log = tmp_path / "worker.log"
    bus = RedisEventBus.from_url(redis_url)
    with log.open("wb") as sink:
        process = await anyio.open_process(argv, env=env, stdout=sink, stderr=sink)
    try:
        # The worker logs (structlog, stdout) once it is warm and about to block on its stream.
        with anyio.fail_after(30):
            while b"standby: waiting" not in log.read_bytes():
                if process.returncode is not None:
                    pytest.fail(f"the worker exited: {log.read_text()}")
                await anyio.sleep(0.02)
        yield Manager(bus, process)
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(10):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await bus.aclose()


async def test_an_assignment_makes_the_standby_worker_serve_prompts(
    redis_db: str, tmp_path: Path
) -> None:
    scenario = Scenario(turns=[[Text("Hello from the assigned worker.")]])
    async with ModelServer(scenario) as server, standby_worker(redis_db, server, tmp_path) as m:
        assigned_id = await m.assign(instructions="Answer briefly.\n", env={"TEAM": "blue"})
        ready = await m.wait_for(lambda ev: "ready" in states(ev), deadline_s=10)
        await m.send({"prompt": "say hello", "request_id": "p1"})
        await m.wait_for(lambda ev: len(results(ev)) == 1)
        await m.send({"type": "stop"})
        with anyio.fail_after(20):
            code = await m.process.wait()
        standby_left = await m.bus.length(standby_stream(SLOT))
        final = [event for _, event in await m.entries()]
    # XADD of the assignment -> XADD of ``ready``, both stamped by the Redis server's clock.
    ready_id = next(i for i, e in ready if isinstance(e.payload, LifecyclePayload))
    latency_ms = parse_stream_id(ready_id)[0] - parse_stream_id(assigned_id)[0]
    print(f"assignment -> ready: {latency_ms} ms")
    assert latency_ms < 1000  # target < 60 ms; generous here against a loaded CI machine
    assert code == 0
    assert standby_left == 0
    assert (tmp_path / "work" / "CLAUDE.md").read_text() == "Answer briefly.\n"
    (result,) = results(final)
    assert result.result.status is ResultStatus.SUCCESS, result
    assert result.result.text == "Hello from the assigned worker."
    assert all(e.worker_id == WORKER for e in final)
    assert (states(final)[0], states(final)[-1]) == ("ready", "stopped")


async def test_sigterm_in_standby_exits_quietly(redis_db: str, tmp_path: Path) -> None:
    server = ModelServer(Scenario.text("unused"))
    async with server, standby_worker(redis_db, server, tmp_path) as m:
        m.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            code = await m.process.wait()
        events = await m.entries()
    assert code == 0
    assert events == []


async def test_allowed_commands_run_and_others_are_not_found(redis_db: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    shell = TOOLS["claude"].shell
    scenario = Scenario(
        turns=[
            [Text("Listing."), shell(f"ls -a {work}")],
            [Text("Touching."), shell(f"touch {work}/made-by-touch")],
            # Allowed by Claude's own rule (``bash`` is listed), so only the shim stops it.
            [Text("Nesting."), shell(f"bash -c 'touch {work}/made-by-nested-touch'")],
            [Text("Done.")],
        ]
    )
    async with ModelServer(scenario) as server, standby_worker(redis_db, server, tmp_path) as m:
        await m.assign(allowed_commands=["ls", "bash"])
        await m.wait_for(lambda ev: "ready" in states(ev), deadline_s=10)
        # The prompt's PATH would find touch: the shim's PATH is pinned over it.
        await m.send({"prompt": "list, then touch", "request_id": "p1", "env": {"PATH": "/bin"}})
        entries = await m.wait_for(lambda ev: len(results(ev)) == 1, deadline_s=90)
    events = [event for _, event in entries]
    outputs = [e.payload for e in events if isinstance(e.payload, ToolResultPayload)]
    (result,) = results(events)
    assert result.result.status is ResultStatus.SUCCESS, result
    assert len(outputs) == 3, outputs
    listed, touched, nested = outputs
    assert not listed.is_error, listed
    assert "CLAUDE.md" not in listed.output  # no instructions in this assignment
    assert "." in listed.output.split()
    # Claude's ``acceptEdits`` mode lets ``touch`` in the workdir through as a file edit
    # (2.1.330): the shim is what stops it, despite the prompt's own PATH.
    assert touched.is_error, touched
    assert "touch: command not found" in touched.output, touched
    assert nested.is_error, nested
    assert "touch: command not found" in nested.output, nested
    assert not (work / "made-by-touch").exists()
    assert not (work / "made-by-nested-touch").exists()
