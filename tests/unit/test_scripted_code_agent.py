"""ScriptedCodeAgent's own knobs (the port contract itself is tests/contract)."""

from __future__ import annotations

import contextlib

import anyio
import pytest

from codeyard.adapters.memory.code_agent import Pause, ScriptedCodeAgent
from codeyard.domain.agent import AgentCapabilities, AgentRequest, AgentResult, ResultStatus
from codeyard.domain.errors import AlreadyExists, ResumeUnsupported
from codeyard.domain.events import (
    AgentEvent,
    EventPayload,
    InitPayload,
    MessagePayload,
    ResultPayload,
)

pytestmark = pytest.mark.anyio


def _request(**fields: object) -> AgentRequest:
    return AgentRequest.parse({"provider": "scripted", "prompt": "do it", **fields})


async def _run(agent: ScriptedCodeAgent, request: AgentRequest) -> list[AgentEvent]:
    with anyio.fail_after(10):
        async with contextlib.aclosing(agent.execute(request)) as stream:
            return [event async for event in stream]


def _status(event: AgentEvent) -> ResultStatus:
    assert isinstance(event.payload, ResultPayload)
    return event.payload.result.status


async def test_script_without_result_gets_a_synthesized_error_result() -> None:
    events = await _run(ScriptedCodeAgent([InitPayload(), MessagePayload(text="hi")]), _request())
    assert [e.type.value for e in events] == ["init", "message", "result"]
    assert _status(events[-1]) is ResultStatus.ERROR
    assert isinstance(events[-1].payload, ResultPayload)
    assert events[-1].payload.result.terminal_reason == "no_result"


async def test_nothing_after_the_first_result_is_played() -> None:
    result = ResultPayload(result=AgentResult(status=ResultStatus.SUCCESS, provider="scripted"))
    script: list[EventPayload] = [result, MessagePayload(text="late"), result]
    events = await _run(ScriptedCodeAgent(script), _request())
    assert [e.seq for e in events] == [0]


async def test_script_callable_sees_the_request_and_may_raise_before_any_event() -> None:
    def script(request: AgentRequest) -> list[MessagePayload]:
        if request.prompt == "boom":
            raise ResumeUnsupported("simulated")
        return [MessagePayload(text=request.prompt)]

    agent = ScriptedCodeAgent(script)
    events = await _run(agent, _request(prompt="echo"))
    assert isinstance(events[0].payload, MessagePayload)
    assert events[0].payload.text == "echo"
    with pytest.raises(ResumeUnsupported):
        await _run(agent, _request(prompt="boom"))
    assert agent.running == frozenset()


async def test_resume_refused_when_not_a_capability() -> None:
    caps = AgentCapabilities(
        resume=False, interrupt=True, streaming_deltas=False, reports_cost=False, max_turns=False
    )
    agent = ScriptedCodeAgent(capabilities=caps)
    with pytest.raises(ResumeUnsupported):
        await _run(agent, _request(session_id="abc"))


async def test_same_request_id_cannot_run_twice_at_once() -> None:
    agent = ScriptedCodeAgent([InitPayload(), Pause(60)])
    request = _request()
    with anyio.fail_after(10):
        async with contextlib.aclosing(agent.execute(request)) as first:
            await anext(first)
            with pytest.raises(AlreadyExists):
                await _run(agent, request)
            await agent.cancel(request.id)
            rest = [event async for event in first]
    assert _status(rest[-1]) is ResultStatus.CANCELLED


async def test_idle_timeout_fires_before_the_hard_deadline() -> None:
    agent = ScriptedCodeAgent([InitPayload(), Pause(60)])
    events = await _run(agent, _request(timeout_s=30, idle_timeout_s=0.2))
    assert _status(events[-1]) is ResultStatus.TIMEOUT
    assert isinstance(events[-1].payload, ResultPayload)
    assert events[-1].payload.result.terminal_reason == "idle_timeout"


async def test_step_delay_is_applied_before_each_event() -> None:
    agent = ScriptedCodeAgent(step_delay_s=0.05)
    started = anyio.current_time()
    events = await _run(agent, _request())
    assert anyio.current_time() - started >= 0.05 * len(events) * 0.9
    assert _status(events[-1]) is ResultStatus.SUCCESS


def test_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError, match="step_delay_s"):
        ScriptedCodeAgent(step_delay_s=-1)
