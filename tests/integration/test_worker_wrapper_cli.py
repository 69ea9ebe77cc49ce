"""``codeyard worker`` as a subprocess: real Redis streams, the REAL Claude Code CLI, the
scripted model server. A client's view: push prompts on ``worker:<id>:input``, read
``worker:<id>:output``.
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
from codeyard.domain.events import (
    AgentEvent,
    LifecyclePayload,
    MessagePayload,
    ResultPayload,
    ToolResultPayload,
    ToolUsePayload,
)
from codeyard.domain.streams import worker_input_stream, worker_output_stream
from codeyard.domain.worker_io import EVENT_FIELD, INPUT_FIELD
from codeyard.testing.agents import AgentBinaryMissing, agent_binary
from codeyard.testing.model_server import ModelServer, Scenario, Stall, Text
from codeyard.testing.model_server.tools import TOOLS
from tests.services import service_unavailable

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WORKER = "w-int-1"
KEY_ENV = "CODEYARD_TEST_WORKER_API_KEY"
API_KEY = "sk-ant-codeyard-worker-7f3a"


def claude_binary() -> Path:
    try:
        return agent_binary("claude")
    except AgentBinaryMissing as exc:
        service_unavailable("the claude CLI", str(exc), "scripts/install-agents claude")


class Client:
    def __init__(self, bus: RedisEventBus, process: anyio.abc.Process) -> None:
        self.bus = bus
        self.process = process

    async def send(self, message: dict[str, object]) -> None:
        await self.bus.publish(worker_input_stream(WORKER), {INPUT_FIELD: json.dumps(message)})

    async def events(self) -> list[AgentEvent]:
        entries = await self.bus.read(worker_output_stream(WORKER), count=10_000)
        return [AgentEvent.model_validate_json(e.fields[EVENT_FIELD]) for e in entries]

    async def wait_for(
        self, check: Callable[[list[AgentEvent]], bool], deadline_s: float = 60.0
    ) -> list[AgentEvent]:
        with anyio.fail_after(deadline_s):
            while True:
                events = await self.events()
                if check(events):
                    return events
                if self.process.returncode is not None:
                    pytest.fail(f"the worker exited with {self.process.returncode}: {events}")
                await anyio.sleep(0.05)


def processes_with_home(home: Path) -> list[int]:
    """Live processes whose environment has ``HOME=home`` (the agent CLI and its tools)."""
    wanted = f"HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if wanted in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
    return found


def results(events: list[AgentEvent]) -> list[AgentEvent]:
    return [e for e in events if isinstance(e.payload, ResultPayload)]


def states(events: list[AgentEvent]) -> list[str]:
    return [e.payload.state for e in events if isinstance(e.payload, LifecyclePayload)]


@contextlib.asynccontextmanager
async def worker(redis_url: str, server: ModelServer, tmp_path: Path) -> AsyncIterator[Client]:
    (tmp_path / "instructions.md").write_text("Answer briefly.\n")
    argv = [
        str(Path(sys.executable).with_name("codeyard")),
        *("worker", "--worker-id", WORKER, "--provider", "claude"),
        *("--workdir", str(tmp_path / "work"), "--home", str(tmp_path / "home")),
        *("--instructions-file", str(tmp_path / "instructions.md"), "--heartbeat-s", "0.5"),
        *("--agent-binary", str(claude_binary()), "--base-url", server.base_url),
        *("--api-key-env", KEY_ENV),
    ]
    env = {
        **os.environ,
        "CODEYARD_BACKENDS__EVENT_BUS": "redis",
        "CODEYARD_REDIS_URL": redis_url,
        KEY_ENV: API_KEY,
    }
    bus = RedisEventBus.from_url(redis_url)
    process = await anyio.open_process(argv, env=env, stdout=None, stderr=None)
    try:
        client = Client(bus, process)
        await client.wait_for(lambda ev: "ready" in states(ev), deadline_s=30)
        yield client
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


async def test_prompts_stream_events_in_order_and_the_second_resumes(
    redis_db: str, tmp_path: Path
) -> None:
    target = tmp_path / "work" / "hello.txt"
    scenario = Scenario(
        turns=[
            [Text("I'll write the file."), TOOLS["claude"].write_file(str(target), "hi\n")],
            [Text("I will remember PELICAN.")],
            [Text("The word was PELICAN.")],
        ]
    )
    async with ModelServer(scenario) as server, worker(redis_db, server, tmp_path) as client:
        assert (tmp_path / "work" / "CLAUDE.md").read_text() == "Answer briefly.\n"
        await client.send({"prompt": "write hello.txt, remember PELICAN", "request_id": "p1"})
        first = await client.wait_for(lambda ev: len(results(ev)) == 1)
        await client.send({"prompt": "which word?", "request_id": "p2", "timeout_s": 60})
        both = await client.wait_for(lambda ev: len(results(ev)) == 2)
        await client.send({"type": "stop"})
        with anyio.fail_after(20):
            code = await client.process.wait()
        final = await client.events()
        history = json.dumps(server.model_requests()[-1].body)
    assert code == 0
    assert target.read_text() == "hi\n"
    run1 = [e for e in first if e.run_id == "p1"]
    assert [e.seq for e in run1] == list(range(len(run1)))
    assert run1[-1].is_terminal
    kinds = {type(e.payload) for e in run1}
    assert {ToolUsePayload, ToolResultPayload, MessagePayload} <= kinds
    r1, r2 = (r.payload.result for r in results(both) if isinstance(r.payload, ResultPayload))
    assert r1.status is ResultStatus.SUCCESS, r1
    assert r2.status is ResultStatus.SUCCESS, r2
    assert r1.session_id
    assert r2.session_id == r1.session_id
    assert r2.text == "The word was PELICAN."
    assert "I will remember PELICAN." in history  # the CLI resumed the first session
    assert API_KEY not in json.dumps([e.model_dump(mode="json") for e in final])
    assert states(final)[0] == "ready"
    assert "heartbeat" in states(final)
    last = final[-1].payload
    assert isinstance(last, LifecyclePayload)
    assert (last.state, last.detail["reason"]) == ("stopped", "stop_requested")


async def test_sigterm_publishes_stopped_and_exits_cleanly(redis_db: str, tmp_path: Path) -> None:
    server = ModelServer(Scenario.text("unused"))
    async with server, worker(redis_db, server, tmp_path) as client:
        client.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(20):
            code = await client.process.wait()
        final = await client.events()
    assert code == 0
    last = final[-1].payload
    assert isinstance(last, LifecyclePayload)
    assert (last.state, last.detail["reason"]) == ("stopped", "cancelled")


async def test_sigterm_mid_turn_ends_the_turn_cancelled_then_stopped(
    redis_db: str, tmp_path: Path
) -> None:
    server = ModelServer(Scenario(turns=[[Text("Let me think"), Stall()]]))
    async with server, worker(redis_db, server, tmp_path) as client:
        await client.send({"prompt": "think forever", "request_id": "long"})
        await client.wait_for(
            lambda ev: any(isinstance(e.payload, MessagePayload) for e in ev), deadline_s=30
        )
        assert processes_with_home(tmp_path / "home")  # the CLI runs: the census can see it
        client.process.send_signal(signal.SIGTERM)
        with anyio.fail_after(30):
            code = await client.process.wait()
        final = await client.events()
        pending = await client.bus.pending_count(worker_input_stream(WORKER), "worker")
    assert code == 0
    assert pending == 0
    assert processes_with_home(tmp_path / "home") == []
    (result,) = results(final)
    assert result.run_id == "long"
    assert isinstance(result.payload, ResultPayload)
    assert result.payload.result.status is ResultStatus.CANCELLED
    last = final[-1].payload
    assert isinstance(last, LifecyclePayload)
    assert (last.state, last.detail["reason"]) == ("stopped", "cancelled")
