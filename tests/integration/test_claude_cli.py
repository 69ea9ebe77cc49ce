"""The REAL Claude Code CLI (``claude --print --output-format stream-json``) through
ClaudeSpec and the shared run loop, against the scripted model server (Anthropic Messages
API), as a local subprocess.

Every run is checked to end with exactly one result event, and processes are counted by an
environment marker (see ``claude_support``): the CLI's process group and every tool
process (Claude runs those in sessions of their own) must be gone when the run is over.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import TypeVar

import anyio
import pytest

from codeyard.adapters.cli.redact import REDACTED
from codeyard.adapters.cli.types import InterruptStep
from codeyard.domain.agent import ResultStatus
from codeyard.domain.events import (
    AgentEvent,
    ErrorPayload,
    InitPayload,
    LifecyclePayload,
    MessagePayload,
    ToolResultPayload,
    ToolUsePayload,
)
from codeyard.testing.model_server import HttpError, Scenario, Stall, Text
from codeyard.testing.model_server.tools import TOOLS
from tests.integration.claude_support import (
    API_KEY,
    assert_no_secret,
    claude_harness,
    need_claude,
)
from tests.integration.cli_support import Proc, final_result, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOOL = TOOLS["claude"]
#: A tool command that blocks for a minute. Claude refuses ``sleep N; ...`` ("Blocked:
#: sleep 60 followed by..."), so the wait is a ``tail`` under ``timeout``.
SLOW = "timeout 60 tail -f /dev/null; echo late > late.txt"


def _tail_runs(procs: list[Proc]) -> bool:
    """The innermost tool process is up (not just ``timeout``, whose command line also
    says ``tail -f``): the tool's process tree is complete, nothing is forking."""
    return any(p.cmdline.startswith("tail -f") for p in procs)


@pytest.fixture(autouse=True)
def _claude_installed() -> None:
    need_claude()


P = TypeVar("P")


def _payloads(events: list[AgentEvent], kind: type[P]) -> list[P]:
    return [e.payload for e in events if isinstance(e.payload, kind)]


async def test_a_tool_call_writes_the_file_then_the_answer_ends_the_run(tmp_path: Path) -> None:
    target = tmp_path / "work" / "hello.txt"
    scenario = Scenario(
        turns=[
            [Text("I'll write the file."), TOOL.write_file(str(target), "hello from claude\n")],
            [Text("Done: wrote hello.txt.")],
        ]
    )
    async with claude_harness(scenario, tmp_path) as h:
        request = h.request(
            "-create hello.txt (a prompt that looks like an option)",
            model="claude-sonnet-4-5",
            instructions="Answer like a pirate.",
            system_prompt_append="Never use emoji.",
        )
        events = await h.run(request)
        first_body = h.body(0)
        sent = h.server.model_requests()[0].body
    assert sent is not None
    result = final_result(events, request)
    assert result.status is ResultStatus.SUCCESS, result
    assert result.text == "Done: wrote hello.txt."
    assert target.read_text() == "hello from claude\n"
    # --append-system-prompt carried both, --model the model, and "--" kept the prompt whole.
    assert "Answer like a pirate." in first_body
    assert "Never use emoji." in first_body
    assert "-create hello.txt (a prompt that looks like an option)" in first_body
    assert sent["model"] == "claude-sonnet-4-5"
    (init,) = _payloads(events, InitPayload)
    assert init.session_id == result.session_id
    assert init.cwd == str(tmp_path / "work")
    (use,) = _payloads(events, ToolUsePayload)
    assert use.name == "Write"
    assert use.input["file_path"] == str(target)
    (tool_result,) = _payloads(events, ToolResultPayload)
    assert tool_result.tool_use_id == use.tool_use_id
    assert not tool_result.is_error
    deltas = [m for m in _payloads(events, MessagePayload) if m.delta]
    assert "".join(d.text for d in deltas).endswith("Done: wrote hello.txt.")
    assert result.usage.output_tokens > 0
    assert result.cost_usd is not None
    assert result.turns == 2
    assert result.exit_code == 0
    assert result.terminal_reason == "completed"
    assert_no_secret(events)
    h.assert_nothing_left()


async def test_resume_continues_the_session_in_a_second_turn(tmp_path: Path) -> None:
    scenario = Scenario.text("I will remember PELICAN.", "The word was PELICAN.")
    async with claude_harness(scenario, tmp_path) as h:
        first_request = h.request("remember the word PELICAN")
        first = final_result(await h.run(first_request), first_request)
        assert first.ok, first
        assert first.session_id
        second_request = h.request("which word?", session_id=first.session_id)
        events = await h.run(second_request)
        history = h.body(1)
    second = final_result(events, second_request)
    assert second.status is ResultStatus.SUCCESS, second
    assert second.session_id == first.session_id
    assert second.text == "The word was PELICAN."
    # The second process sent the first turn along: it found the session under HOME.
    assert "remember the word PELICAN" in history
    assert "I will remember PELICAN." in history
    h.assert_nothing_left()


async def test_resume_of_an_unknown_session_is_an_error_result(tmp_path: Path) -> None:
    async with claude_harness(Scenario.text("unused"), tmp_path) as h:
        request = h.request("hello", session_id="7a3c2a9e-0000-4000-8000-000000000000")
        events = await h.run(request)
        assert h.server.model_requests() == []
    result = final_result(events, request)
    assert result.status is ResultStatus.ERROR
    assert result.error is not None
    assert "No conversation found" in result.error
    h.assert_nothing_left()


async def test_cancel_mid_stream(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[Text("Let me think"), Stall()]])
    async with claude_harness(scenario, tmp_path) as h:
        request = h.request("think forever")

        async def cancel_once_streaming(event: AgentEvent) -> None:
            if isinstance(event.payload, MessagePayload) and event.payload.delta:
                await h.agent.cancel(request.id)

        began = time.monotonic()
        events = await h.run(request, cancel_once_streaming)
        elapsed = time.monotonic() - began
    result = final_result(events, request)
    assert result.status is ResultStatus.CANCELLED, result
    assert result.terminal_reason == "cancel_requested"
    # SIGINT was enough: Claude printed its own (aborted) result, which lends its facts.
    assert result.error is not None
    assert "stopped by SIGINT" in result.error
    assert result.session_id
    assert result.text == "Let me think"
    assert elapsed < 15
    h.assert_nothing_left()


async def test_cancel_mid_tool_leaves_no_process(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[TOOL.shell(SLOW)], [Text("unreachable")]])
    async with claude_harness(scenario, tmp_path) as h:
        request = h.request("run the slow command")
        leader_pgid: list[int] = []

        async def cancel_once_blocked(event: AgentEvent) -> None:
            if isinstance(event.payload, InitPayload):
                leader_pgid.extend({p.pgid for p in h.census() if "claude" in p.cmdline})
            if isinstance(event.payload, ToolUsePayload):
                await wait_for(lambda: _tail_runs(h.census()))
                await h.agent.cancel(request.id)

        events = await h.run(request, cancel_once_blocked)
    result = final_result(events, request)
    assert result.status is ResultStatus.CANCELLED, result
    tails = [p for p in h.seen.values() if p.cmdline.startswith("tail -f")]
    assert tails
    # Why a process-group kill alone would not do: the tool ran in a group of its own.
    assert leader_pgid
    assert {p.pgid for p in tails}.isdisjoint(leader_pgid)
    h.assert_nothing_left()
    assert not (tmp_path / "work" / "late.txt").exists()


@pytest.mark.parametrize("status", [500, 529])
async def test_a_retryable_model_error_is_retried_then_ends_in_an_error_result(
    tmp_path: Path, status: int
) -> None:
    error = HttpError(status, message="mock overload", headers={"retry-after-ms": "0"})
    async with claude_harness(Scenario(turns=[[error]]), tmp_path, max_retries=1) as h:
        request = h.request("hello")
        began = time.monotonic()
        events = await h.run(request)
        elapsed = time.monotonic() - began
        attempts = len(h.server.model_requests())
    result = final_result(events, request)
    assert result.status is ResultStatus.ERROR, result
    assert result.terminal_reason == "api_error"
    assert result.error is not None
    assert str(status) in result.error
    assert result.exit_code == 1
    retries, final_error = _payloads(events, ErrorPayload)
    assert retries.code == "api_retry"
    assert retries.retryable
    assert final_error.retryable, "a 5xx is worth retrying later"
    assert attempts == 2, "CLAUDE_CODE_MAX_RETRIES=1: one retry"
    assert elapsed < 20
    h.assert_nothing_left()


async def test_a_client_error_is_not_retried(tmp_path: Path) -> None:
    async with claude_harness(Scenario(turns=[[HttpError(400)]]), tmp_path, max_retries=3) as h:
        request = h.request("hello")
        events = await h.run(request)
    result = final_result(events, request)
    assert result.status is ResultStatus.ERROR, result
    errors = _payloads(events, ErrorPayload)
    assert [e.code for e in errors] == ["invalid_request_error"]
    assert not errors[0].retryable
    h.assert_nothing_left()


async def test_a_stalled_model_hits_the_idle_timeout(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[Text("partial answer"), Stall()]])
    async with claude_harness(scenario, tmp_path) as h:
        request = h.request("hello", idle_timeout_s=3.0, timeout_s=60.0)
        began = time.monotonic()
        events = await h.run(request)
        elapsed = time.monotonic() - began
    result = final_result(events, request)
    assert result.status is ResultStatus.TIMEOUT, result
    assert result.terminal_reason == "idle_timeout"
    assert result.text == "partial answer"
    assert result.session_id
    assert 3.0 <= elapsed < 15
    h.assert_nothing_left()


async def test_a_cli_that_never_prints_its_result_gets_a_synthesized_one(tmp_path: Path) -> None:
    """The upstream bug (stream-json sometimes ends without ``result``) forced for real:
    with SIGKILL as the only interrupt step, the CLI cannot print its result."""
    kill_only = (InterruptStep(signal.SIGKILL, 2.0),)
    scenario = Scenario(turns=[[Text("partial answer"), Stall()]])
    async with claude_harness(scenario, tmp_path, interrupt=kill_only) as h:
        request = h.request("hello", idle_timeout_s=2.0, timeout_s=60.0)
        events = await h.run(request)
    result = final_result(events, request)
    init = _payloads(events, InitPayload)[0]
    assert result.status is ResultStatus.TIMEOUT, result
    assert result.terminal_reason == "idle_timeout"
    assert result.exit_code == 128 + signal.SIGKILL
    assert result.session_id == init.session_id, "learned by the parser from the init line"
    assert result.text == "partial answer", "rebuilt from the streamed deltas"
    assert result.error is not None
    assert "SIGKILL" in result.error
    h.assert_nothing_left()


async def test_max_turns_ends_the_run_after_that_many_turns(tmp_path: Path) -> None:
    scenario = Scenario(
        turns=[[TOOL.shell("echo one")], [TOOL.shell("echo two")], [Text("never reached")]]
    )
    async with claude_harness(scenario, tmp_path) as h:
        request = h.request("loop", max_turns=1)
        events = await h.run(request)
        calls = len(h.server.model_requests())
    result = final_result(events, request)
    assert result.status is ResultStatus.ERROR, result
    assert result.terminal_reason == "max_turns"
    assert result.error == "Reached maximum number of turns (1)"
    assert calls == 1
    h.assert_nothing_left()


async def test_allowed_commands_run_and_others_are_denied(tmp_path: Path) -> None:
    allowed = "python3 -c \"open('allowed.txt', 'w').write('ok')\""
    denied = "node -e \"require('fs').writeFileSync('denied.txt', 'no')\""
    scenario = Scenario(turns=[[TOOL.shell(allowed)], [TOOL.shell(denied)], [Text("done")]])
    async with claude_harness(scenario, tmp_path) as h:
        request = h.request("write two files", allowed_commands=("python3",))
        events = await h.run(request)
    result = final_result(events, request)
    assert result.status is ResultStatus.SUCCESS, result
    assert (h.workdir / "allowed.txt").read_text() == "ok"
    assert not (h.workdir / "denied.txt").exists()
    ran, refused = _payloads(events, ToolResultPayload)
    assert not ran.is_error
    assert refused.is_error
    assert "requires approval" in refused.output
    denials = [p for p in _payloads(events, LifecyclePayload) if p.state == "permission_denied"]
    assert len(denials) == 1
    h.assert_nothing_left()


async def test_the_api_key_is_redacted_even_when_a_tool_prints_it(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[TOOL.shell("printenv ANTHROPIC_API_KEY")], [Text("ok")]])
    async with claude_harness(scenario, tmp_path) as h:
        request = h.request("show the key")
        events = await h.run(request)
    final_result(events, request)
    (tool_result,) = _payloads(events, ToolResultPayload)
    assert REDACTED in tool_result.output
    assert_no_secret(events)
    assert all(API_KEY not in (e.raw or "") for e in events)
    h.assert_nothing_left()


async def test_consumer_cancellation_mid_tool_leaves_no_process(tmp_path: Path) -> None:
    """No SIGINT here: the run is torn down by the consumer, so the launcher itself must
    reach the tool, which Claude started in a session of its own."""
    scenario = Scenario(turns=[[TOOL.shell(SLOW)], [Text("unreachable")]])
    async with claude_harness(scenario, tmp_path) as h:
        request = h.request("run the slow command")
        events: list[AgentEvent] = []
        with anyio.fail_after(60), anyio.CancelScope() as scope:
            async with contextlib.aclosing(h.agent.execute(request)) as stream:
                async for event in stream:
                    events.append(event)
                    h.census()
                    if isinstance(event.payload, ToolUsePayload):
                        await wait_for(lambda: _tail_runs(h.census()))
                        scope.cancel()
        assert scope.cancelled_caught
        assert not any(e.is_terminal for e in events)
        assert _tail_runs(list(h.seen.values()))
        h.assert_nothing_left()
