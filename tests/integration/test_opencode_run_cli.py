"""The REAL ``opencode run --format json`` (opencode-ai 1.18.33) through OpencodeRunSpec and
the shared run loop, against the scripted model server (OpenAI Chat Completions), as a
local subprocess. Each run must be well formed: ``seq`` 0..n-1, exactly one result and it
is last."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import anyio
import pytest

from codeyard.adapters.cli.agent import local_agent
from codeyard.adapters.opencode.config import OpencodeConfig
from codeyard.adapters.opencode.run_spec import OpencodeRunOptions, OpencodeRunSpec
from codeyard.domain.agent import AgentRequest, AgentResult, ResultStatus
from codeyard.domain.events import (
    AgentEvent,
    ErrorPayload,
    InitPayload,
    MessagePayload,
    ResultPayload,
    ToolResultPayload,
    ToolUsePayload,
)
from codeyard.testing.model_server import HttpError, ModelServer, Scenario, Stall, Text
from codeyard.testing.model_server.tools import write_file
from tests.integration.opencode_support import opencode_binary

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RUN_DEADLINE_S = 120.0


async def run(agent_home: Path, base_url: str, request: AgentRequest) -> list[AgentEvent]:
    config = OpencodeConfig(binary=opencode_binary(), base_url=base_url, model="mock-model")
    agent = local_agent(OpencodeRunSpec(OpencodeRunOptions(config=config)), agent_home)
    events: list[AgentEvent] = []
    with anyio.fail_after(RUN_DEADLINE_S):
        async with contextlib.aclosing(agent.execute(request)) as stream:
            async for event in stream:
                events.append(event)
    assert [e.seq for e in events] == list(range(len(events)))
    assert [e.payload.type for e in events].count("result") == 1
    assert isinstance(events[-1].payload, ResultPayload)
    return events


def the_result(events: list[AgentEvent]) -> AgentResult:
    payload = events[-1].payload
    assert isinstance(payload, ResultPayload)
    return payload.result


async def test_a_write_file_call_then_an_answer_is_one_success(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    target = work / "hello.txt"
    scenario = Scenario(
        turns=[
            [Text("I'll write the file."), write_file("opencode", str(target), "hello ✓\n")],
            [Text("Done: wrote hello.txt.")],
        ]
    )
    async with ModelServer(scenario) as model:
        request = AgentRequest(
            provider="opencode-run",
            prompt="create hello.txt",
            workdir=str(work),
            instructions="Answer like a pirate.",
        )
        events = await run(tmp_path / "home", model.base_url, request)
        bodies = json.dumps([r.body for r in model.model_requests()])
    result = the_result(events)
    assert result.status is ResultStatus.SUCCESS, result
    assert result.provider == "opencode-run"
    assert result.exit_code == 0
    assert result.text == "Done: wrote hello.txt."
    assert result.terminal_reason == "stop"
    assert target.read_text() == "hello ✓\n"
    assert "Answer like a pirate." in bodies, "AGENTS.md reached the model"
    [init] = [e.payload for e in events if isinstance(e.payload, InitPayload)]
    assert init.session_id == result.session_id
    assert result.session_id
    assert result.session_id.startswith("ses_")
    uses = [e.payload for e in events if isinstance(e.payload, ToolUsePayload)]
    assert [u.name for u in uses] == ["write"]
    [tool_result] = [e.payload for e in events if isinstance(e.payload, ToolResultPayload)]
    assert tool_result.tool_use_id == uses[0].tool_use_id
    assert not tool_result.is_error
    texts = [
        e.payload.text
        for e in events
        if isinstance(e.payload, MessagePayload) and e.payload.role == "assistant"
    ]
    assert texts == ["I'll write the file.", "Done: wrote hello.txt."]
    assert result.turns == 2


async def test_resume_continues_the_session_with_a_prompt_that_looks_like_an_option(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    scenario = Scenario.text("I will remember PELICAN.", "The word was PELICAN.")
    async with ModelServer(scenario) as model:
        first_request = AgentRequest(
            provider="opencode-run", prompt="remember the word PELICAN", workdir=str(work)
        )
        first = the_result(await run(tmp_path / "home", model.base_url, first_request))
        assert first.status is ResultStatus.SUCCESS, first
        second_request = AgentRequest(
            provider="opencode-run",
            prompt="--which word? (a prompt that looks like an option)",
            workdir=str(work),
            session_id=first.session_id,
        )
        second = the_result(await run(tmp_path / "home", model.base_url, second_request))
        history = json.dumps(model.model_requests()[-1].body)
    assert second.status is ResultStatus.SUCCESS, second
    assert second.session_id == first.session_id
    assert second.text == "The word was PELICAN."
    assert "PELICAN" in history
    assert "--which word?" in history


async def test_a_model_http_400_ends_in_one_error_result(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[HttpError(400, message="mock: bad request")]])
    async with ModelServer(scenario) as model:
        request = AgentRequest(provider="opencode-run", prompt="fail", workdir=str(tmp_path))
        events = await run(tmp_path / "home", model.base_url, request)
    result = the_result(events)
    assert result.status is ResultStatus.ERROR, result
    assert result.error is not None
    assert "mock: bad request" in result.error
    assert result.terminal_reason == "APIError"
    [error] = [e.payload for e in events if isinstance(e.payload, ErrorPayload)]
    assert error.code == "APIError"


async def test_a_stalled_model_hits_the_idle_timeout_and_sigterm_ends_the_cli(
    tmp_path: Path,
) -> None:
    """Measured: the FIRST ``opencode run`` in a fresh HOME ignores SIGTERM for 15 s and
    more (its background plugin install, presumably), so only a later turn shows SIGTERM
    at work; the escalation's SIGKILL covers the first one."""
    scenario = Scenario(turns=[[Text("Ready.")], [Text("thinking about it"), Stall()]])
    async with ModelServer(scenario) as model:
        warm_up = AgentRequest(provider="opencode-run", prompt="ready?", workdir=str(tmp_path))
        first = the_result(await run(tmp_path / "home", model.base_url, warm_up))
        assert first.ok, first
        request = AgentRequest(
            provider="opencode-run",
            prompt="talk",
            workdir=str(tmp_path),
            session_id=first.session_id,
            idle_timeout_s=15,
        )
        started = anyio.current_time()
        events = await run(tmp_path / "home", model.base_url, request)
        took = anyio.current_time() - started
    result = the_result(events)
    assert result.status is ResultStatus.TIMEOUT, result
    assert result.terminal_reason == "idle_timeout"
    assert result.error is not None
    assert "stopped by SIGTERM" in result.error, result.error
    assert result.session_id == first.session_id
    assert took < 60
