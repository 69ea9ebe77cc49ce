"""The REAL Codex CLI (``codex exec --json``) through CodexSpec and the shared run loop,
against the scripted model server (OpenAI Responses API), as a local subprocess.

Each run is checked to end with exactly one result event, and processes are counted by an
environment marker (see ``codex_gemini_support``): the CLI's process group and every tool
process must be gone when the run is over.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import anyio
import anyio.abc
import pytest

from codeyard.adapters.codex import spec as codex_spec_module
from codeyard.domain.agent import ResultStatus
from codeyard.domain.events import AgentEvent, ErrorPayload, InitPayload, ToolUsePayload
from codeyard.testing.model_server import HttpError, Scenario, Stall, Text
from codeyard.testing.model_server.tools import shell, write_file
from tests.integration.cli_support import final_result, need_binary, proxy_recorder, wait_for
from tests.integration.codex_gemini_support import (
    Harness,
    assert_no_secret,
    body_text,
    run_harness,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _codex_installed() -> None:
    need_binary("codex")


def harness(
    scenario: Scenario, tmp_path: Path, env: dict[str, str] | None = None
) -> contextlib.AbstractAsyncContextManager[Harness]:
    return run_harness("codex", scenario, tmp_path, env)


async def test_a_tool_call_writes_the_file_then_the_answer_ends_the_run(tmp_path: Path) -> None:
    target = tmp_path / "work" / "hello.txt"
    scenario = Scenario(
        turns=[
            [Text("I'll write the file."), write_file("codex", str(target), "hello from codex\n")],
            [Text("Done: wrote hello.txt.")],
        ]
    )
    async with harness(scenario, tmp_path) as h:
        request = h.request("create hello.txt", instructions="Answer like a pirate.")
        events = await h.run(request)
        assert "Answer like a pirate." in body_text(h, 0), "AGENTS.md reached the model"
    result = final_result(events, request)
    assert result.status is ResultStatus.SUCCESS, result
    assert result.text == "Done: wrote hello.txt."
    assert target.read_text() == "hello from codex\n"
    inits = [e.payload for e in events if isinstance(e.payload, InitPayload)]
    assert [i.session_id for i in inits] == [result.session_id]
    uses = [e.payload for e in events if isinstance(e.payload, ToolUsePayload)]
    assert len(uses) == 1
    assert "hello.txt" in str(uses[0].input["command"])
    assert [e.payload.type for e in events].count("tool_result") == 1
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
        second_request = h.request("-- which word? (a prompt that looks like an option)")
        second_request = second_request.model_copy(update={"session_id": first.session_id})
        events = await h.run(second_request)
        second = final_result(events, second_request)
        history = body_text(h, 1)
    assert second.status is ResultStatus.SUCCESS, second
    assert second.session_id == first.session_id
    assert second.text == "The word was PELICAN."
    # The second process sent the first turn along: codex found the session on disk.
    assert "remember the word PELICAN" in history
    assert "which word? (a prompt that looks like an option)" in history
    assert not any(
        isinstance(e.payload, ErrorPayload) and e.payload.code == "resume_not_found" for e in events
    )
    h.assert_nothing_left()


async def test_cancel_mid_stream(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[Text("Let me think"), Stall()]])
    async with harness(scenario, tmp_path) as h:
        request = h.request("think forever")

        async def cancel_once_streaming(event: AgentEvent) -> None:
            if event.payload.type == "lifecycle" and event.payload.state == "turn_started":
                await wait_for(lambda: bool(h.server.model_requests()))
                await h.agent.cancel(request.id)

        began = time.monotonic()
        events = await h.run(request, cancel_once_streaming)
        elapsed = time.monotonic() - began
    result = final_result(events, request)
    assert result.status is ResultStatus.CANCELLED, result
    assert result.terminal_reason == "cancel_requested"
    assert result.session_id, "the session id learned before the cancel is kept"
    assert elapsed < 15
    h.assert_nothing_left()


async def test_cancel_mid_tool_leaves_no_process(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[shell("codex", "sleep 60; echo late > late.txt")], [Text("x")]])
    async with harness(scenario, tmp_path) as h:
        request = h.request("run the slow command")

        async def cancel_once_sleeping(event: AgentEvent) -> None:
            if isinstance(event.payload, ToolUsePayload):
                await wait_for(lambda: any("sleep 60" in p.cmdline for p in h.census()))
                await h.agent.cancel(request.id)

        events = await h.run(request, cancel_once_sleeping)
    result = final_result(events, request)
    assert result.status is ResultStatus.CANCELLED, result
    assert any("sleep 60" in p.cmdline for p in h.seen.values())
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
    assert result.terminal_reason == "turn.failed"
    assert any(isinstance(e.payload, ErrorPayload) for e in events)
    assert elapsed < 20, "max_retries=0: no backoff"
    h.assert_nothing_left()


async def test_a_stalled_model_hits_the_idle_timeout(tmp_path: Path) -> None:
    async with harness(Scenario(turns=[[Stall()]]), tmp_path) as h:
        request = h.request("hello", idle_timeout_s=3.0, timeout_s=60.0)
        began = time.monotonic()
        events = await h.run(request)
        elapsed = time.monotonic() - began
    result = final_result(events, request)
    assert result.status is ResultStatus.TIMEOUT, result
    assert result.terminal_reason == "idle_timeout"
    assert 3.0 <= elapsed < 15
    h.assert_nothing_left()


@pytest.mark.parametrize("plugins_disabled", [True, False])
async def test_no_call_home_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, plugins_disabled: bool
) -> None:
    """Codex 0.169 dials github.com, api.github.com and chatgpt.com at start (its plugin
    marketplace). The generated config turns the ``plugins`` feature off, which stops all
    of them; the control run (feature left on) proves the recorder sees them."""
    if not plugins_disabled:
        monkeypatch.setattr(codex_spec_module, "DISABLED_FEATURES", ())
    async with proxy_recorder() as (proxy, seen):
        env = {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "NO_PROXY": "127.0.0.1,localhost"}
        async with harness(Scenario.text("hi"), tmp_path, env) as h:
            request = h.request("hello")
            began = time.monotonic()
            result = final_result(await h.run(request), request)
            elapsed = time.monotonic() - began
        await anyio.sleep(0.2)  # a connection accepted as the run ended is still recorded
    assert result.ok, result
    if plugins_disabled:
        assert seen == []
        assert elapsed < 10
    else:
        assert any("github.com" in line for line in seen), seen
