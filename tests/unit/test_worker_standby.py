"""Standby workers with the in-memory event bus and the scripted agent (real parts, no I/O).

The Redis bus, the real Claude CLI and the command shim under it are covered by
tests/integration/test_worker_standby_cli.py through ``codeyard worker --standby``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from codeyard.adapters.memory.clock import SystemClock
from codeyard.adapters.memory.code_agent import ScriptedCodeAgent, ScriptItem, default_script
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.app.cli import app
from codeyard.app.command_shim import SHIM_DIR
from codeyard.app.worker_agent import (
    NATIVE_ALLOWLIST,
    AgentOptions,
    agent_executable,
    build_agent,
)
from codeyard.app.worker_cli import main as worker_cli_main
from codeyard.app.worker_standby import StandbyConfig, parse_assignment, run_standby
from codeyard.domain.agent import AgentRequest
from codeyard.domain.errors import InvalidInput
from codeyard.domain.events import AgentEvent, LifecyclePayload, ResultPayload
from codeyard.domain.streams import (
    StreamMessage,
    standby_stream,
    worker_input_stream,
    worker_output_stream,
)
from codeyard.domain.worker_io import EVENT_FIELD, INPUT_FIELD, InvalidWorkerInput
from codeyard.ports.code_agent import CodeAgent

pytestmark = pytest.mark.anyio

SLOT = "slot-1"
WORKER = "w-std"


class WatchedBus(InMemoryEventBus):
    """Sets ``waiting`` once the standby worker blocks on its stream (no sleep needed)."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = anyio.Event()

    async def read(
        self, stream: str, *, after: str = "0-0", count: int = 100, block_s: float | None = None
    ) -> list[StreamMessage]:
        if stream == standby_stream(SLOT):
            self.waiting.set()
        return await super().read(stream, after=after, count=count, block_s=block_s)


class Recorder:
    """A scripted agent that keeps every request, and the PATHs it was rebuilt with."""

    def __init__(self) -> None:
        self.requests: list[AgentRequest] = []
        self.built: list[str | None] = []

    def script(self, request: AgentRequest) -> list[ScriptItem]:
        self.requests.append(request)
        return list(default_script(request, provider="claude"))

    def agent(self) -> ScriptedCodeAgent:
        return ScriptedCodeAgent(self.script, provider="claude")

    def build(self, path: str | None) -> CodeAgent:
        self.built.append(path)
        return self.agent()


async def assign(bus: InMemoryEventBus, message: dict[str, object] | str) -> str:
    raw = message if isinstance(message, str) else json.dumps(message)
    return await bus.publish(standby_stream(SLOT), {INPUT_FIELD: raw})


async def events_of(bus: InMemoryEventBus, worker: str = WORKER) -> list[AgentEvent]:
    entries = await bus.read(worker_output_stream(worker), count=10_000)
    return [AgentEvent.model_validate_json(e.fields[EVENT_FIELD]) for e in entries]


async def wait_for(
    bus: InMemoryEventBus, check: Callable[[list[AgentEvent]], bool]
) -> list[AgentEvent]:
    with anyio.fail_after(5):
        while True:
            events = await events_of(bus)
            if check(events):
                return events
            await anyio.sleep(0.01)


def states(events: list[AgentEvent]) -> list[str]:
    return [e.payload.state for e in events if isinstance(e.payload, LifecyclePayload)]


def results(events: list[AgentEvent]) -> list[AgentEvent]:
    return [e for e in events if isinstance(e.payload, ResultPayload)]


def config(tmp_path: Path, *, native: bool = True) -> StandbyConfig:
    return StandbyConfig(
        slot=SLOT,
        provider="claude",
        workdir=tmp_path / "work",
        home=tmp_path / "home",
        heartbeat_s=60.0,
        agent_executable=None,
        native_allowlist=native,
        poll_s=0.05,
    )


@asynccontextmanager
async def standby(
    tmp_path: Path, bus: InMemoryEventBus, recorder: Recorder, *, native: bool = True
) -> AsyncIterator[None]:
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            run_standby,
            bus,
            SystemClock(),
            config(tmp_path, native=native),
            recorder.agent(),
            recorder.build,
        )
        yield
        tg.cancel_scope.cancel()


async def test_an_assignment_published_before_start_is_served(tmp_path: Path) -> None:
    bus, recorder = InMemoryEventBus(), Recorder()
    await assign(bus, {"type": "assign", "worker_id": WORKER, "instructions": "Be brief."})
    async with standby(tmp_path, bus, recorder):
        await wait_for(bus, lambda ev: "ready" in states(ev))
        assert await bus.length(standby_stream(SLOT)) == 0  # deleted once read
        assert (tmp_path / "work" / "CLAUDE.md").read_text() == "Be brief."
        await bus.publish(worker_input_stream(WORKER), {INPUT_FIELD: '{"prompt": "hi"}'})
        events = await wait_for(bus, lambda ev: len(results(ev)) == 1)
    assert all(e.worker_id == WORKER for e in events)
    assert recorder.built == []  # no allowed_commands: the warm agent serves
    assert recorder.requests[0].allowed_commands == ()


async def test_an_assignment_published_while_waiting_is_served(tmp_path: Path) -> None:
    bus, recorder = WatchedBus(), Recorder()
    async with standby(tmp_path, bus, recorder):
        with anyio.fail_after(5):
            await bus.waiting.wait()
        assert await events_of(bus) == []
        await assign(bus, {"worker_id": WORKER})
        events = await wait_for(bus, lambda ev: "ready" in states(ev))
        assert await bus.length(standby_stream(SLOT)) == 0
    assert states(events) == ["ready"]


@pytest.mark.parametrize(
    "garbage",
    [
        "not json",
        "[1, 2]",
        '{"type": "assign"}',
        '{"worker_id": "bad id with spaces"}',
        '{"worker_id": "w9", "surprise": true}',
        '{"type": "stop", "worker_id": "w9"}',
    ],
)
async def test_garbage_entries_are_skipped(tmp_path: Path, garbage: str) -> None:
    bus, recorder = InMemoryEventBus(), Recorder()
    await bus.publish(standby_stream(SLOT), {"other": "field"})
    await assign(bus, garbage)
    async with standby(tmp_path, bus, recorder):
        await assign(bus, {"worker_id": WORKER})
        await wait_for(bus, lambda ev: "ready" in states(ev))
    assert await bus.length(worker_output_stream("w9")) == 0


@pytest.mark.parametrize(
    "garbage", ["not json", "[1]", '{"worker_id": "w9", "allowed_commands": "ls"}']
)
def test_parse_assignment_refuses_garbage_with_a_typed_error(garbage: str) -> None:
    with pytest.raises(InvalidWorkerInput):
        parse_assignment({INPUT_FIELD: garbage})
    with pytest.raises(InvalidWorkerInput, match="no 'message' field"):
        parse_assignment({})


async def test_assignment_env_is_under_every_turns_env(tmp_path: Path) -> None:
    bus, recorder = InMemoryEventBus(), Recorder()
    await assign(bus, {"worker_id": WORKER, "env": {"A": "1", "B": "2"}})
    async with standby(tmp_path, bus, recorder):
        await bus.publish(
            worker_input_stream(WORKER), {INPUT_FIELD: '{"prompt": "x", "env": {"B": "3"}}'}
        )
        await bus.publish(worker_input_stream(WORKER), {INPUT_FIELD: '{"prompt": "y"}'})
        await wait_for(bus, lambda ev: len(results(ev)) == 2)
    assert [r.env for r in recorder.requests] == [{"A": "1", "B": "3"}, {"A": "1", "B": "2"}]


@pytest.mark.parametrize("native", [True, False])
async def test_allowed_commands_pin_a_shim_path_and_reach_native_requests(
    tmp_path: Path, native: bool
) -> None:
    bus, recorder = InMemoryEventBus(), Recorder()
    await assign(bus, {"worker_id": WORKER, "allowed_commands": ["ls", "git status"]})
    async with standby(tmp_path, bus, recorder, native=native):
        # A prompt cannot widen the shim's PATH.
        prompt = {"prompt": "x", "env": {"PATH": "/usr/bin:/bin", "C": "1"}}
        await bus.publish(worker_input_stream(WORKER), {INPUT_FIELD: json.dumps(prompt)})
        await wait_for(bus, lambda ev: len(results(ev)) == 1)
    shim = tmp_path / "home" / SHIM_DIR
    assert recorder.built == [str(shim)]
    (request,) = recorder.requests
    assert request.env == {"PATH": str(shim), "C": "1"}
    assert request.allowed_commands == (("ls", "git status") if native else ())
    assert (shim / "ls").resolve().name == "ls"
    assert (shim / "bash").exists()


async def test_cancellation_in_standby_publishes_nothing(tmp_path: Path) -> None:
    bus, recorder = WatchedBus(), Recorder()
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                run_standby, bus, SystemClock(), config(tmp_path), recorder.agent(), recorder.build
            )
            with anyio.fail_after(5):
                await bus.waiting.wait()
            scope.cancel()
    assert scope.cancelled_caught
    assert await bus.length(standby_stream(SLOT)) == 0
    assert await events_of(bus) == []
    assert recorder.built == []
    assert recorder.requests == []


def test_native_allowlist_and_executables_per_provider() -> None:
    assert {"claude", "droid", "opencode"} == NATIVE_ALLOWLIST
    assert agent_executable("claude", AgentOptions()) == "claude"
    assert agent_executable("codex", AgentOptions()) == "codex"
    assert agent_executable("opencode-run", AgentOptions()) == "opencode"
    assert agent_executable("gemini", AgentOptions(binary="/opt/g")) == "/opt/g"
    assert agent_executable("plugin", AgentOptions()) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "one of the arguments --worker-id --standby is required"),
        (["--worker-id", "w1", "--standby", "s1"], "not allowed with argument"),
        (["--standby", "s1", "--instructions-file", "x.md"], "from its assignment"),
    ],
)
def test_worker_command_needs_exactly_one_mode(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both spellings: the container's lean ``codeyard-worker`` and ``codeyard worker``.
    with pytest.raises(SystemExit) as exited:
        worker_cli_main(argv)
    assert exited.value.code == 2
    assert message in " ".join(capsys.readouterr().err.split())
    result = CliRunner().invoke(app, ["worker", *argv], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_the_path_option_reaches_configurable_specs_only(tmp_path: Path) -> None:
    assert AgentOptions(path="/shim").overrides() == {"path": "/shim"}
    assert build_agent("claude", AgentOptions(path="/shim"), home=tmp_path).provider == "claude"
    assert build_agent("opencode", AgentOptions(path="/shim"), home=tmp_path).provider == (
        "opencode"
    )
    # A plugin gets the shim's PATH through the request env instead (worker_main).
    with pytest.raises(InvalidInput, match="PATH"):
        build_agent("plugin", AgentOptions(path="/shim"), home=tmp_path)
