"""ClaudeStreamParser on hand-made lines the recorded transcripts do not cover: thinking,
rate limits, retries, other result subtypes, odd shapes (tests/unit/test_claude_parser.py
covers every recorded transcript and the properties)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from codeyard.adapters.claude.parser import ClaudeStreamParser, tool_output
from codeyard.domain.agent import ResultStatus, TokenUsage
from codeyard.domain.events import (
    ErrorPayload,
    EventPayload,
    LifecyclePayload,
    MessagePayload,
    RawPayload,
    ResultPayload,
    ToolResultPayload,
    UsagePayload,
)


def _feed_one(obj: Any) -> list[EventPayload]:
    line = obj if isinstance(obj, str) else json.dumps(obj)
    parsed = ClaudeStreamParser().feed(line)
    assert all(p.raw == line for p in parsed)
    return [p.payload for p in parsed]


def test_thinking_blocks_and_deltas() -> None:
    payloads = _feed_one(
        {
            "type": "assistant",
            "message": {
                "id": "m1",
                "content": [
                    {"type": "thinking", "thinking": "let me see", "signature": "sig"},
                    {"type": "text", "text": "answer"},
                ],
            },
        }
    )
    assert payloads == [
        MessagePayload(kind="thinking", text="let me see", message_id="m1"),
        MessagePayload(text="answer", message_id="m1"),
    ]
    delta = {"type": "thinking_delta", "thinking": "hmm"}
    event = {"type": "content_block_delta", "index": 0, "delta": delta}
    assert _feed_one({"type": "stream_event", "event": event, "api_message_id": "m2"}) == [
        MessagePayload(kind="thinking", text="hmm", delta=True, message_id="m2")
    ]


def test_tool_input_and_signature_deltas_yield_nothing() -> None:
    for delta in (
        {"type": "input_json_delta", "partial_json": '{"comm'},
        {"type": "signature_delta", "signature": "abc"},
        {"type": "text_delta", "text": ""},
    ):
        event = {"type": "content_block_delta", "index": 1, "delta": delta}
        assert _feed_one({"type": "stream_event", "event": event}) == []


def test_delta_message_id_falls_back_to_message_start() -> None:
    parser = ClaudeStreamParser()
    start = {"type": "message_start", "message": {"id": "msg_x", "content": []}}
    assert parser.feed(json.dumps({"type": "stream_event", "event": start})) == []
    delta = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}}
    (parsed,) = parser.feed(json.dumps({"type": "stream_event", "event": delta}))
    assert parsed.payload == MessagePayload(text="hi", delta=True, message_id="msg_x")


def test_stream_error_event_is_a_retryable_error() -> None:
    error = {"type": "overloaded_error", "message": "Overloaded"}
    assert _feed_one({"type": "stream_event", "event": {"type": "error", "error": error}}) == [
        ErrorPayload(message="Overloaded", code="overloaded_error", retryable=True)
    ]


def test_rate_limit_events() -> None:
    info = {"status": "allowed_warning", "resetsAt": 1795340182, "rateLimitType": "five_hour"}
    assert _feed_one({"type": "rate_limit_event", "rate_limit_info": info}) == [
        LifecyclePayload(state="rate_limit", detail=info)
    ]
    rejected = {**info, "status": "rejected"}
    (error,) = _feed_one({"type": "rate_limit_event", "rate_limit_info": rejected})
    assert isinstance(error, ErrorPayload)
    assert error.code == "rate_limited"
    assert error.retryable
    assert "five_hour" in error.message


def test_api_retry_is_a_retryable_error_and_other_system_lines_are_lifecycle() -> None:
    retry = {
        "type": "system",
        "subtype": "api_retry",
        "attempt": 2,
        "max_retries": 10,
        "retry_delay_ms": 1200,
        "error_status": 529,
        "error": "overloaded",
    }
    (error,) = _feed_one(retry)
    assert isinstance(error, ErrorPayload)
    assert error.code == "api_retry"
    assert error.retryable
    assert "529" in error.message
    assert "retry 2 of 10" in error.message
    boundary = {"type": "system", "subtype": "compact_boundary", "uuid": "u", "session_id": "s"}
    assert _feed_one({**boundary, "compact_metadata": {"trigger": "auto"}}) == [
        LifecyclePayload(state="compact_boundary", detail={"compact_metadata": {"trigger": "auto"}})
    ]
    assert _feed_one({"type": "system"}) == [LifecyclePayload(state="system")]


@pytest.mark.parametrize(
    ("status", "category", "retryable"),
    [(529, "overloaded", True), (500, "server_error", True), (401, "authentication_failed", False)],
)
def test_synthetic_api_error_messages(status: int, category: str, retryable: bool) -> None:
    line = {
        "type": "assistant",
        "message": {"model": "<synthetic>", "content": [{"type": "text", "text": "API Error"}]},
        "error": category,
        "is_api_error_message": True,
        "api_error_status": status,
    }
    assert _feed_one(line) == [
        ErrorPayload(message="API Error", code=category, retryable=retryable)
    ]


def test_max_turns_result_and_cache_tokens() -> None:
    parser = ClaudeStreamParser()
    answer = {"type": "assistant", "message": {"content": [{"type": "text", "text": "partial"}]}}
    parser.feed(json.dumps(answer))
    line = {
        "type": "result",
        "subtype": "error_max_turns",
        "is_error": True,
        "num_turns": 3,
        "session_id": "s-1",
        "total_cost_usd": 0.5,
        "duration_ms": 2500,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 20,
            "cache_read_input_tokens": 30,
            "cache_creation_input_tokens": 40,
        },
    }
    usage, result = (p.payload for p in parser.feed(json.dumps(line)))
    expected = TokenUsage(
        input_tokens=10, output_tokens=20, cache_read_tokens=30, cache_write_tokens=40
    )
    assert usage == UsagePayload(usage=expected, cost_usd=0.5)
    assert isinstance(result, ResultPayload)
    assert result.result.status is ResultStatus.ERROR
    assert result.result.terminal_reason == "error_max_turns"
    assert result.result.error == "claude ended with error_max_turns (no reason)"
    assert result.result.session_id == "s-1"
    assert result.result.text == "partial"
    assert result.result.duration_s == 2.5
    assert result.result.usage.total == 100


def test_result_with_junk_numbers_still_parses() -> None:
    line = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "ok",
        "num_turns": -1,
        "total_cost_usd": "free",
        "duration_ms": float("inf"),
        "usage": {"input_tokens": True, "output_tokens": 1.5},
    }
    usage, result = _feed_one(json.dumps(line, allow_nan=True))
    assert isinstance(result, ResultPayload)
    assert result.result.status is ResultStatus.SUCCESS
    assert result.result.text == "ok"
    assert result.result.cost_usd is None
    assert result.result.turns == 0
    assert usage == UsagePayload(usage=TokenUsage())


def test_user_lines() -> None:
    assert _feed_one({"type": "user", "message": {"role": "user", "content": "do it"}}) == [
        MessagePayload(role="user", text="do it")
    ]
    blocks = [
        {"type": "text", "text": "line 1"},
        {"type": "image", "source": {"data": "AAAA"}},
        {"type": "text", "text": "line 2"},
    ]
    tool_result = {"type": "tool_result", "tool_use_id": "t1", "content": blocks, "is_error": True}
    assert _feed_one({"type": "user", "message": {"content": [tool_result]}}) == [
        ToolResultPayload(tool_use_id="t1", output="line 1\n[image]\nline 2", is_error=True)
    ]


def test_tool_output_shapes() -> None:
    assert tool_output(None) == ""
    assert tool_output("x") == "x"
    assert tool_output(["a", {"type": "text", "text": "b"}]) == "a\nb"
    assert tool_output({"k": 1}) == '{"k": 1}'


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("Error: something went wrong", "not json"),
        ("[1, 2]", "not a json object"),
        ('{"type": "keep_alive"}', "unknown type 'keep_alive'"),
        ('{"no_type": 1}', "unknown type 'None'"),
        ('{"type": "assistant", "message": {"content": []}}', "assistant message without content"),
        ('{"type": "assistant", "message": {"content": [{"type": "tool_use"}]}}', "malformed"),
        ('{"type": "stream_event", "event": {"type": "ping"}}', "unknown stream event 'ping'"),
        ('{"type": "user", "message": {"content": [{"type": "image"}]}}', "unknown user block"),
    ],
)
def test_unknown_and_malformed_lines_become_raw(line: str, reason: str) -> None:
    (parsed,) = ClaudeStreamParser().feed(line)
    assert parsed.raw == line
    assert isinstance(parsed.payload, RawPayload)
    assert parsed.payload.reason.startswith(reason)


def test_blank_lines_yield_nothing() -> None:
    assert ClaudeStreamParser().feed("") == []
    assert ClaudeStreamParser().feed("  \t") == []
