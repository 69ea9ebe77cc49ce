"""Hypothesis strategies for domain models, shared by property tests."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import strategies as st
from pydantic import JsonValue

from codeyard.domain.agent import AgentRequest, AgentResult, ResultStatus, TokenUsage
from codeyard.domain.events import (
    AgentEvent,
    ErrorPayload,
    EventPayload,
    InitPayload,
    LifecyclePayload,
    MessagePayload,
    RawPayload,
    ResultPayload,
    StderrPayload,
    StdoutPayload,
    ToolResultPayload,
    ToolUsePayload,
    UsagePayload,
)

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
providers = st.sampled_from(["claude", "droid", "opencode", "codex", "gemini", "my-agent"])
texts = st.text(max_size=40)
prompts = texts.filter(lambda s: s.strip() != "")
finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)
timestamps = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
json_values: st.SearchStrategy[JsonValue] = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**53), max_value=2**53) | finite | texts,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(texts, children, max_size=3),
    max_leaves=8,
)
env_keys = st.from_regex(r"[A-Z_][A-Z0-9_]{0,15}", fullmatch=True)


@st.composite
def agent_requests(draw: st.DrawFn) -> AgentRequest:
    timeout = draw(st.floats(min_value=1, max_value=86_400, allow_nan=False))
    idle = draw(st.floats(min_value=0.1, max_value=timeout, allow_nan=False))
    return AgentRequest(
        id=draw(names),
        prompt=draw(prompts),
        provider=draw(providers),
        model=draw(st.none() | texts),
        workdir=draw(st.none() | texts),
        session_id=draw(st.none() | texts),
        timeout_s=timeout,
        idle_timeout_s=idle,
        instructions=draw(st.none() | texts),
        allowed_commands=tuple(draw(st.lists(texts, max_size=4))),
        env=draw(st.dictionaries(env_keys, texts, max_size=4)),
        max_turns=draw(st.none() | st.integers(min_value=1, max_value=1000)),
        worker_id=draw(st.none() | names),
        task_id=draw(st.none() | names),
    )


usages = st.builds(
    TokenUsage,
    input_tokens=st.integers(0, 10**9),
    output_tokens=st.integers(0, 10**9),
    cache_read_tokens=st.integers(0, 10**9),
    cache_write_tokens=st.integers(0, 10**9),
)


@st.composite
def agent_results(draw: st.DrawFn) -> AgentResult:
    return AgentResult(
        status=draw(st.sampled_from(list(ResultStatus))),
        provider=draw(providers),
        session_id=draw(st.none() | texts),
        text=draw(texts),
        cost_usd=draw(st.none() | finite),
        usage=draw(usages),
        turns=draw(st.integers(0, 1000)),
        duration_s=draw(finite),
        error=draw(st.none() | texts),
        terminal_reason=draw(st.none() | texts),
        exit_code=draw(st.none() | st.integers(-255, 255)),
    )


payloads: st.SearchStrategy[EventPayload] = st.one_of(
    st.builds(
        InitPayload,
        session_id=st.none() | texts,
        model=st.none() | texts,
        tools=st.lists(texts, max_size=3).map(tuple),
    ),
    st.builds(
        MessagePayload,
        role=st.sampled_from(["assistant", "user", "system"]),
        kind=st.sampled_from(["text", "thinking"]),
        text=texts,
        delta=st.booleans(),
    ),
    st.builds(
        ToolUsePayload,
        tool_use_id=texts,
        name=texts,
        input=st.dictionaries(texts, json_values, max_size=3),
    ),
    st.builds(ToolResultPayload, tool_use_id=texts, output=texts, is_error=st.booleans()),
    st.builds(UsagePayload, usage=usages, cost_usd=st.none() | finite),
    st.builds(ErrorPayload, message=texts, code=st.none() | texts, retryable=st.booleans()),
    st.builds(ResultPayload, result=agent_results()),
    st.builds(StdoutPayload, line=texts),
    st.builds(StderrPayload, line=texts),
    st.builds(
        LifecyclePayload, state=texts, detail=st.dictionaries(texts, json_values, max_size=3)
    ),
    st.builds(RawPayload, reason=texts),
)


@st.composite
def agent_events(draw: st.DrawFn) -> AgentEvent:
    return AgentEvent(
        id=draw(names),
        provider=draw(st.none() | providers),
        worker_id=draw(st.none() | names),
        task_id=draw(st.none() | names),
        run_id=draw(st.none() | texts),
        seq=draw(st.integers(0, 2**62)),
        ts=draw(timestamps),
        payload=draw(payloads),
        raw=draw(st.none() | texts),
    )
