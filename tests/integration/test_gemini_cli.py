"""The REAL Gemini CLI (``gemini --output-format stream-json --yolo``) through GeminiSpec
and the shared run loop, against the scripted model server (Gemini
``streamGenerateContent`` SSE), as a local subprocess.

Each run is checked to end with exactly one result event, and processes are counted by an
environment marker (see ``codex_gemini_support``): Gemini detaches its shell tools into
process groups of their own, so "the CLI's group is gone" is not enough; the supervisor
shell of :mod:`codeyard.adapters.gemini.supervise` must have killed them too.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import pytest

from codeyard.domain.agent import ResultStatus
from codeyard.domain.events import AgentEvent, MessagePayload, ToolUsePayload
from codeyard.testing.model_server import HttpError, Scenario, Stall, Text
from codeyard.testing.model_server.tools import shell, write_file
from tests.integration.cli_support import final_result, need_binary, wait_for
from tests.integration.codex_gemini_support import (
    Harness,
    assert_no_secret,
    body_text,
    run_harness,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _gemini_installed() -> None:
    need_binary("gemini")


def harness(scenario: Scenario, tmp_path: Path) -> contextlib.AbstractAsyncContextManager[Harness]:
    return run_harness("gemini", scenario, tmp_path)


async def test_a_tool_call_writes_the_file_then_the_answer_ends_the_run(tmp_path: Path) -> None:
    target = tmp_path / "work" / "hello.txt"
    scenario = Scenario(
        turns=[
            [
                Text("I'll write the file."),
                write_file("gemini", str(target), "hello from gemini\n"),
            ],
            [Text("Done: wrote hello.txt.", chunk_size=6)],
        ]
    )
    async with harness(scenario, tmp_path) as h:
        request = h.request("create hello.txt", instructions="Answer like a pirate.")
        events = await h.run(request)
        assert "Answer like a pirate." in body_text(h, 0), "GEMINI.md reached the model"
    result = final_result(events, request)
    assert result.status is ResultStatus.SUCCESS, result
    assert result.text == "Done: wrote hello.txt."
    assert target.read_text() == "hello from gemini\n"
    uses = [e.payload for e in events if isinstance(e.payload, ToolUsePayload)]
    assert [u.name for u in uses] == ["write_file"]
    assert [e.payload.type for e in events].count("tool_result") == 1
    messages = [e.payload for e in events if isinstance(e.payload, MessagePayload)]
    deltas = [m.text for m in messages if m.delta and m.role == "assistant"]
    assert len(deltas) > 2, "the answer streamed in fragments"
    full = [m.text for m in messages if not m.delta and m.role == "assistant"]
    assert full == ["I'll write the file.", "Done: wrote hello.txt."]
    assert result.usage.output_tokens > 0
    assert result.exit_code == 0
    assert_no_secret(events)
    h.assert_nothing_left()


async def test_resume_continues_the_session_in_a_second_turn(tmp_path: Path) -> None:
    scenario = Scenario.text("I will remember PELICAN.", "The word was PELICAN.")
    async with harness(scenario, tmp_path) as h:
        first_request = h.request("remember the word PELICAN")
        first = final_result(await h.run(first_request), first_request)
        assert first.ok
        assert first.session_id
        second_request = h.request("--which word? (a prompt that looks like an option)")
        second_request = second_request.model_copy(update={"session_id": first.session_id})
        second = final_result(await h.run(second_request), second_request)
        history = body_text(h, 1)
    assert second.status is ResultStatus.SUCCESS, second
    assert second.session_id == first.session_id
    assert second.text == "The word was PELICAN."
    assert "remember the word PELICAN" in history
    assert "--which word? (a prompt that looks like an option)" in history
    h.assert_nothing_left()


async def test_resuming_an_unknown_session_is_an_error_result(tmp_path: Path) -> None:
    async with harness(Scenario.text("never asked"), tmp_path) as h:
        request = h.request("hello", session_id="no-such-session")
        events = await h.run(request)
        assert h.server.model_requests() == []
    result = final_result(events, request)
    assert result.status is ResultStatus.ERROR
    assert result.exit_code == 42
    assert result.error is not None
    assert "Error resuming session" in result.error, "the CLI's reason, from its stderr"
    h.assert_nothing_left()


async def test_cancel_mid_stream(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[Text("Let me think"), Stall()]])
    async with harness(scenario, tmp_path) as h:
        request = h.request("think forever")

        async def cancel_on_first_fragment(event: AgentEvent) -> None:
            if isinstance(event.payload, MessagePayload) and event.payload.delta:
                await h.agent.cancel(request.id)

        began = time.monotonic()
        events = await h.run(request, cancel_on_first_fragment)
        elapsed = time.monotonic() - began
    result = final_result(events, request)
    assert result.status is ResultStatus.CANCELLED, result
    assert result.terminal_reason == "cancel_requested"
    assert result.text == "Let me think", "what was said before the cancel is kept"
    assert result.session_id
    assert elapsed < 20
    h.assert_nothing_left()


async def test_cancel_mid_tool_leaves_no_process(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[shell("gemini", "sleep 60; echo late > late.txt")], [Text("x")]])
    async with harness(scenario, tmp_path) as h:
        request = h.request("run the slow command")

        async def cancel_once_sleeping(event: AgentEvent) -> None:
            if isinstance(event.payload, ToolUsePayload):
                await wait_for(lambda: any(p.cmdline.startswith("sleep") for p in h.census()))
                await h.agent.cancel(request.id)

        events = await h.run(request, cancel_once_sleeping)
    result = final_result(events, request)
    assert result.status is ResultStatus.CANCELLED, result
    sleeper_groups = {p.pgid for p in h.seen.values() if p.cmdline.startswith("sleep")}
    cli_groups = {p.pgid for p in h.seen.values() if "codeyard-gemini" in p.cmdline}
    assert sleeper_groups
    assert sleeper_groups.isdisjoint(cli_groups), "gemini detaches its tools (why we sweep)"
    h.assert_nothing_left()
    assert not (tmp_path / "work" / "late.txt").exists()


@pytest.mark.parametrize("status", [500, 429, 400])
async def test_a_model_http_error_ends_in_an_error_result(tmp_path: Path, status: int) -> None:
    async with harness(Scenario(turns=[[HttpError(status)]]), tmp_path) as h:
        request = h.request("hello")
        began = time.monotonic()
        events = await h.run(request)
        elapsed = time.monotonic() - began
    result = final_result(events, request)
    assert result.status is ResultStatus.ERROR, result
    assert result.error
    # Gemini exits with the HTTP status, truncated to a byte: 400 -> 144, 500 -> 244.
    assert result.exit_code == status % 256
    if status != 429:  # a 429 is reported without its body ("RESOURCE_EXHAUSTED")
        assert result.terminal_reason == f"api_error_{status}"
        assert json.dumps(status) in result.error
    assert elapsed < 20, "max_attempts=1: no backoff"
    reports = list((tmp_path / "home" / ".gemini" / "codeyard-tmp").glob("gemini-client-error*"))
    assert reports, "the CLI's error report stays in the private HOME (TMPDIR)"
    h.assert_nothing_left()


async def test_a_stalled_model_hits_the_idle_timeout(tmp_path: Path) -> None:
    async with harness(Scenario(turns=[[Stall()]]), tmp_path) as h:
        request = h.request("hello", idle_timeout_s=4.0, timeout_s=60.0)
        began = time.monotonic()
        events = await h.run(request)
        elapsed = time.monotonic() - began
    result = final_result(events, request)
    assert result.status is ResultStatus.TIMEOUT, result
    assert result.terminal_reason == "idle_timeout"
    assert 4.0 <= elapsed < 20
    h.assert_nothing_left()


async def test_max_turns_stops_the_run_after_that_many_model_turns(tmp_path: Path) -> None:
    target = tmp_path / "work" / "a.txt"
    scenario = Scenario(
        turns=[[write_file("gemini", str(target), "a\n")], [Text("second turn, never asked")]]
    )
    async with harness(scenario, tmp_path) as h:
        request = h.request("write a.txt", max_turns=1)
        events = await h.run(request)
        asked = len(h.server.model_requests())
    result = final_result(events, request)
    assert result.status is ResultStatus.ERROR, result
    assert result.terminal_reason == "FatalTurnLimitedError"
    assert asked == 1
    assert target.read_text() == "a\n", "the first turn's tool call still ran"
    h.assert_nothing_left()
