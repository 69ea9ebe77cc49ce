"""WorkerWrapper with the in-memory event bus and the scripted agent (real parts, no I/O).

The Redis bus and the real Claude CLI are covered by
tests/integration/test_worker_wrapper_cli.py through the ``codeyard worker`` command.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from typer.testing import CliRunner

from codeyard.adapters.cli.agent import CliCodeAgent
from codeyard.adapters.memory.clock import SystemClock
from codeyard.adapters.memory.code_agent import (
    DEFAULT_CAPABILITIES,
    Pause,
    ScriptedCodeAgent,
    ScriptItem,
    default_script,
)
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.app.cli import app
from codeyard.app.worker_agent import AgentOptions, build_agent
from codeyard.app.worker_wrapper import INPUT_GROUP, WorkerWrapper, instructions_file
from codeyard.domain.agent import AgentRequest, AgentResult, ResultStatus
from codeyard.domain.errors import CodeyardError, InvalidInput, NotFound, UnsupportedProvider
from codeyard.domain.events import (
    AgentEvent,
    ErrorPayload,
    InitPayload,
    LifecyclePayload,
    ResultPayload,
)
from codeyard.domain.streams import worker_input_stream, worker_output_stream
from codeyard.domain.worker_io import EVENT_FIELD, INPUT_FIELD, TYPE_FIELD

pytestmark = pytest.mark.anyio

WORKER = "w1"
INPUT = worker_input_stream(WORKER)
OUTPUT = worker_output_stream(WORKER)


class Harness:
    def __init__(self, bus: InMemoryEventBus, wrapper: WorkerWrapper) -> None:
        self.bus = bus
        self.wrapper = wrapper
        self.done = anyio.Event()
        self.error: CodeyardError | None = None

    async def send(self, message: object) -> str:
        raw = message if isinstance(message, str) else json.dumps(message)
        return await self.bus.publish(INPUT, {INPUT_FIELD: raw})

    async def events(self) -> list[AgentEvent]:
        entries = await self.bus.read(OUTPUT, count=10_000)
        for entry in entries:
            assert (
                entry.fields[TYPE_FIELD] == json.loads(entry.fields[EVENT_FIELD])["payload"]["type"]
            )
        return [AgentEvent.model_validate_json(e.fields[EVENT_FIELD]) for e in entries]

    async def wait_for(
        self, check: Callable[[list[AgentEvent]], bool], deadline_s: float = 5.0
    ) -> list[AgentEvent]:
        with anyio.fail_after(deadline_s):
            while True:
                events = await self.events()
                if check(events):
                    return events
                await anyio.sleep(0.01)


def results(events: list[AgentEvent]) -> list[AgentEvent]:
    return [e for e in events if isinstance(e.payload, ResultPayload)]


def states(events: list[AgentEvent]) -> list[str]:
    return [e.payload.state for e in events if isinstance(e.payload, LifecyclePayload)]


@asynccontextmanager
async def running(
    tmp_path: Path,
    agent: ScriptedCodeAgent | None = None,
    *,
    bus: InMemoryEventBus | None = None,
    provider: str = "scripted",
    instructions: str | None = None,
    heartbeat_s: float = 60.0,
    consumer: str = "c1",
) -> AsyncIterator[Harness]:
    bus = bus or InMemoryEventBus()
    wrapper = WorkerWrapper(
        WORKER,
        bus,
        agent or ScriptedCodeAgent(provider=provider),
        workdir=tmp_path / "work",
        instructions=instructions,
        provider=provider,
        clock=SystemClock(),
        heartbeat_s=heartbeat_s,
        consumer=consumer,
        poll_s=0.05,
    )
    harness = Harness(bus, wrapper)

    async def serve() -> None:
        try:
            await wrapper.run()
        except CodeyardError as exc:
            harness.error = exc
        finally:
            harness.done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        await harness.wait_for(lambda ev: "ready" in states(ev))
        yield harness
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("provider", "name"),
    [
        ("claude", "CLAUDE.md"),
        ("gemini", "GEMINI.md"),
        ("codex", "AGENTS.md"),
        ("droid", "AGENTS.md"),
    ],
)
def test_instructions_file_per_provider(provider: str, name: str) -> None:
    assert instructions_file(provider) == name


async def test_ready_then_prompt_events_in_order_ending_with_result(tmp_path: Path) -> None:
    agent = ScriptedCodeAgent(provider="claude")
    async with running(tmp_path, agent, provider="claude", instructions="Be brief.") as h:
        assert (tmp_path / "work" / "CLAUDE.md").read_text() == "Be brief."
        await h.send({"prompt": "list files", "request_id": "r1", "timeout_s": 60})
        events = await h.wait_for(lambda ev: len(results(ev)) == 1)
        assert await h.bus.pending_count(INPUT, INPUT_GROUP) == 0
    assert states(events[:1]) == ["ready"]
    run = [e for e in events if e.run_id == "r1"]
    expected = default_script(
        AgentRequest(prompt="list files", provider="claude"), provider="claude"
    )
    assert [e.payload.type for e in run] == [p.type for p in expected]
    assert [e.seq for e in run] == list(range(len(expected)))
    assert all(e.worker_id == WORKER and e.provider == "claude" for e in run)
    result = results(events)[0].payload
    assert isinstance(result, ResultPayload)
    assert result.result.status is ResultStatus.SUCCESS
    assert result.result.text == "Done: list files"


async def test_second_prompt_resumes_the_first_session(tmp_path: Path) -> None:
    seen: list[AgentRequest] = []

    def script(request: AgentRequest) -> list[ScriptItem]:
        seen.append(request)
        return list(default_script(request))

    async with running(tmp_path, ScriptedCodeAgent(script)) as h:
        await h.send({"prompt": "first", "model": "m1", "max_turns": 3, "env": {"A": "1"}})
        first = await h.wait_for(lambda ev: len(results(ev)) == 1)
        await h.send({"prompt": "second"})
        await h.wait_for(lambda ev: len(results(ev)) == 2)
        await h.send({"prompt": "third, from scratch", "new_session": True})
        await h.wait_for(lambda ev: len(results(ev)) == 3)
    session = next(e.payload.session_id for e in first if isinstance(e.payload, InitPayload))
    assert session
    assert seen[0].session_id is None
    assert (seen[0].model, seen[0].max_turns, seen[0].env) == ("m1", 3, {"A": "1"})
    assert seen[0].workdir == str(tmp_path / "work")
    assert seen[1].session_id == session
    assert seen[2].session_id is None  # new_session: not resumed
    assert h.wrapper.session_id not in (None, session)  # the fresh session is the one kept


async def test_a_cumulative_session_cost_is_reported_per_run(tmp_path: Path) -> None:
    totals = iter([0.0012, 0.0018, 0.0005])  # claude: running totals; the third is new

    def script(request: AgentRequest) -> list[ScriptItem]:
        session = request.session_id or ("s-new" if request.prompt == "fresh" else "s-1")
        result = AgentResult(
            status=ResultStatus.SUCCESS,
            provider="scripted",
            session_id=session,
            cost_usd=next(totals),
        )
        return [InitPayload(session_id=session), ResultPayload(result=result)]

    caps = DEFAULT_CAPABILITIES.model_copy(update={"cumulative_cost": True})
    async with running(tmp_path, ScriptedCodeAgent(script, capabilities=caps)) as h:
        inputs: list[dict[str, object]] = [
            {"prompt": "one"},
            {"prompt": "two"},
            {"prompt": "fresh", "new_session": True},
        ]
        for count, message in enumerate(inputs, start=1):
            await h.send(message)

            def done(ev: list[AgentEvent], count: int = count) -> bool:
                return len(results(ev)) == count

            events = await h.wait_for(done)
    costs = [r.payload.result.cost_usd for r in results(events)]  # type: ignore[union-attr]
    assert costs == [0.0012, 0.0006, 0.0005]


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[1, 2]",
        '{"prompt": 5}',
        '{"prompt": "x", "surprise": true}',
        '{"type": "reboot"}',
        '{"prompt": "   "}',
        '{"prompt": "x", "timeout_s": -1}',
    ],
)
async def test_malformed_input_is_an_error_event_and_the_wrapper_continues(
    tmp_path: Path, bad: str
) -> None:
    async with running(tmp_path) as h:
        bad_id = await h.send(bad)
        await h.send({"prompt": "still alive?"})
        events = await h.wait_for(lambda ev: len(results(ev)) == 1)
        assert await h.bus.pending_count(INPUT, INPUT_GROUP) == 0
        assert await h.bus.length(INPUT) == 0  # malformed or not, handled means deleted
    errors = [e for e in events if isinstance(e.payload, ErrorPayload)]
    assert len(errors) == 1
    error = errors[0].payload
    assert isinstance(error, ErrorPayload)
    assert bad_id in error.message
    assert error.code
    assert errors[0].seq < results(events)[0].seq or errors[0].run_id is None
    assert events.index(errors[0]) < events.index(results(events)[0])


async def test_a_request_the_agent_refuses_gets_an_error_result(tmp_path: Path) -> None:
    # The wrapper asks for "claude" but the agent serves "scripted": refused before any event.
    async with running(tmp_path, ScriptedCodeAgent(), provider="claude") as h:
        await h.send({"prompt": "hello", "request_id": "r9"})
        events = await h.wait_for(lambda ev: len(results(ev)) == 1)
    run = [e for e in events if e.run_id == "r9"]
    assert [e.payload.type for e in run] == ["error", "result"]
    result = run[-1].payload
    assert isinstance(result, ResultPayload)
    assert result.result.status is ResultStatus.ERROR


async def test_a_prompt_no_request_can_be_built_from_gets_a_result_for_its_run(
    tmp_path: Path,
) -> None:
    # The timeout parses as a prompt but AgentRequest refuses it: the client waiting on
    # "r7" (and prompt_pushed, which looks for its run_id) still sees the run end.
    async with running(tmp_path) as h:
        await h.send({"prompt": "hello", "request_id": "r7", "timeout_s": 10**7})
        events = await h.wait_for(lambda ev: len(results(ev)) == 1)
        assert await h.bus.length(INPUT) == 0
    run = [e for e in events if e.run_id == "r7"]
    assert [e.payload.type for e in run] == ["error", "result"]
    error, result = run[0].payload, run[1].payload
    assert isinstance(error, ErrorPayload)
    assert error.code == "invalid_timeout"
    assert isinstance(result, ResultPayload)
    assert result.result.status is ResultStatus.ERROR
    assert result.result.terminal_reason == "invalid_timeout"


async def test_stop_message_ends_the_wrapper_with_stopped(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        await h.send({"prompt": "one"})
        await h.send({"type": "stop"})
        await h.send({"prompt": "never run"})
        with anyio.fail_after(5):
            await h.done.wait()
        events = await h.events()
        assert await h.bus.pending_count(INPUT, INPUT_GROUP) == 0
        # Handled entries (the prompt, the stop) are deleted; the one never run stays.
        assert [e.fields[INPUT_FIELD] for e in await h.bus.read(INPUT)] == [
            json.dumps({"prompt": "never run"})
        ]
    assert len(results(events)) == 1
    last = events[-1].payload
    assert isinstance(last, LifecyclePayload)
    assert (last.state, last.detail["reason"], last.detail["turns"]) == (
        "stopped",
        "stop_requested",
        1,
    )


async def test_heartbeats_arrive_every_interval(tmp_path: Path) -> None:
    async with running(tmp_path, heartbeat_s=0.05) as h:
        began = anyio.current_time()
        events = await h.wait_for(lambda ev: states(ev).count("heartbeat") >= 4)
        elapsed = anyio.current_time() - began
    beats = [
        e
        for e in events
        if isinstance(e.payload, LifecyclePayload) and e.payload.state == "heartbeat"
    ]
    assert 0.15 <= elapsed < 2.0
    assert [e.seq for e in beats] == sorted(e.seq for e in beats)
    first = beats[0].payload
    assert isinstance(first, LifecyclePayload)
    assert first.detail["busy"] is False
    assert first.detail["turns"] == 0


async def test_cancellation_mid_turn_publishes_a_cancelled_result_and_stopped(
    tmp_path: Path,
) -> None:
    agent = ScriptedCodeAgent([InitPayload(session_id="s1"), Pause(60)])
    bus = InMemoryEventBus()
    async with running(tmp_path, agent, bus=bus) as h:
        await h.send({"prompt": "hang", "request_id": "slow"})
        await h.wait_for(lambda ev: any(isinstance(e.payload, InitPayload) for e in ev))
    # The context manager cancelled the wrapper mid-turn.
    assert h.done.is_set()
    events = await h.events()
    assert agent.running == frozenset()
    assert await bus.pending_count(INPUT, INPUT_GROUP) == 0
    result = results(events)[-1]
    assert result.run_id == "slow"
    assert isinstance(result.payload, ResultPayload)
    assert result.payload.result.status is ResultStatus.CANCELLED
    last = events[-1].payload
    assert isinstance(last, LifecyclePayload)
    assert (last.state, last.detail["reason"]) == ("stopped", "cancelled")


async def test_a_restarted_wrapper_runs_only_unhandled_prompts(tmp_path: Path) -> None:
    bus = InMemoryEventBus()
    async with running(tmp_path, bus=bus, consumer="first") as h:
        await h.send({"prompt": "handled", "request_id": "done1"})
        await h.wait_for(lambda ev: len(results(ev)) == 1)
    # A predecessor that crashed mid-turn: delivered to it, never ACKed.
    await bus.publish(INPUT, {INPUT_FIELD: json.dumps({"prompt": "half", "request_id": "half"})})
    taken = await bus.read_group(INPUT, INPUT_GROUP, "crashed", count=10)
    assert [m.fields[INPUT_FIELD] for m in taken] == [
        json.dumps({"prompt": "half", "request_id": "half"})
    ]
    async with running(tmp_path, bus=bus, consumer="second") as h:
        await h.send({"prompt": "new", "request_id": "new1"})
        events = await h.wait_for(lambda ev: len(results(ev)) == 3)
        assert await bus.pending_count(INPUT, INPUT_GROUP) == 0
    assert [e.run_id for e in results(events)] == ["done1", "half", "new1"]


async def test_an_error_escaping_the_loop_is_reported_as_stopped_failed(tmp_path: Path) -> None:
    bus = InMemoryEventBus()
    async with running(tmp_path, bus=bus) as h:
        # Deleting the input stream takes the consumer group with it: the next read fails.
        await bus.delete_stream(INPUT)
        with anyio.fail_after(5):
            await h.done.wait()
    assert isinstance(h.error, NotFound)
    last = (await h.events())[-1].payload
    assert isinstance(last, LifecyclePayload)
    assert (last.state, last.detail["reason"]) == ("stopped", "failed")


@pytest.mark.parametrize("provider", ["claude", "droid", "codex", "gemini", "opencode-run"])
def test_build_agent_applies_options_to_cli_providers(tmp_path: Path, provider: str) -> None:
    # What each CLI gets from the options: tests/unit/test_worker_agent.py.
    options = AgentOptions(binary="/opt/cli", base_url="http://127.0.0.1:9", api_key="k")
    agent = build_agent(provider, options, home=tmp_path / "home")
    assert isinstance(agent, CliCodeAgent)
    assert agent.provider == provider
    assert (tmp_path / "home").is_dir()
    assert "k" not in repr(options)


def test_build_agent_refuses_options_a_provider_cannot_take(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not supported"):
        build_agent("nope", AgentOptions(binary="/opt/cli"), home=tmp_path)
    assert build_agent("opencode", AgentOptions(binary="/opt/cli"), home=tmp_path).provider == (
        "opencode"
    )
    with pytest.raises(UnsupportedProvider):
        build_agent("nope", AgentOptions(), home=tmp_path)


def test_worker_command_needs_a_redis_event_bus(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["worker", "--worker-id", "w1", "--workdir", str(tmp_path), "--home", str(tmp_path)],
        env={"CODEYARD_BACKENDS__EVENT_BUS": "memory"},
    )
    assert result.exit_code == 2
    assert "CODEYARD_BACKENDS__EVENT_BUS=redis" in result.output


def test_worker_command_reads_the_key_from_the_named_variable(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["worker", "--worker-id", "w1", "--home", str(tmp_path), "--api-key-env", "NO_SUCH_KEY"],
        env={"NO_SUCH_KEY": ""},
    )
    assert result.exit_code == 2
    assert "NO_SUCH_KEY is not set" in result.output
