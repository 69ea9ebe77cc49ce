"""ClaudeStreamParser over every recorded Claude Code transcript, and hypothesis
properties (chunking never matters, garbage never crashes). Hand-made edge lines are in
test_claude_parser_edges.py.

The transcripts in tests/fixtures/transcripts/claude are copies of the real claude 2.1.330
output recorded in /work/shared/agent-transcripts (claude/*.stream.jsonl and
docker/claude.stream.jsonl, renamed docker-run1), unedited.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeyard.adapters.claude.parser import ClaudeStreamParser
from codeyard.adapters.cli.lines import split_lines
from codeyard.adapters.cli.types import Parsed
from codeyard.domain.agent import ResultStatus, TokenUsage
from codeyard.domain.events import (
    ErrorPayload,
    EventPayload,
    InitPayload,
    LifecyclePayload,
    MessagePayload,
    RawPayload,
    ResultPayload,
    ToolResultPayload,
    ToolUsePayload,
    UsagePayload,
)
from tests.unit import parser_support as kit
from tests.unit.strategies import json_values

TRANSCRIPTS = kit.transcript_dir("claude")
ALL_TRANSCRIPTS = sorted(TRANSCRIPTS.glob("*.stream.jsonl"))
FRAMING = {"message_start", "content_block_start", "content_block_stop", "message_delta"}
FRAMING |= {"message_stop"}
_lines = functools.partial(kit.read_transcript, TRANSCRIPTS)


def _parse(lines: list[str]) -> tuple[ClaudeStreamParser, list[Parsed]]:
    parser = ClaudeStreamParser()
    return parser, [parsed for line in lines for parsed in parser.feed(line)]


def _payloads(name: str) -> list[EventPayload]:
    return [p.payload for p in _parse(_lines(name))[1]]


def _result(payloads: list[EventPayload]) -> ResultPayload:
    results = [p for p in payloads if isinstance(p, ResultPayload)]
    assert len(results) == 1
    return results[0]


# --- every recorded transcript ---------------------------------------------------------------


def test_all_transcripts_are_present() -> None:
    assert len(ALL_TRANSCRIPTS) == 8


@pytest.mark.parametrize("path", ALL_TRANSCRIPTS, ids=lambda p: p.name)
def test_every_line_of_every_transcript_is_understood(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    parser = ClaudeStreamParser()
    first_session = json.loads(lines[0])["session_id"]
    for line in lines:
        parsed = parser.feed(line)
        kind = json.loads(line).get("event", {}).get("type")
        if kind in FRAMING:
            assert parsed == [], "framing stream events are repeated by the assistant line"
            continue
        assert parsed, f"a non-framing line yields at least one payload: {line[:120]}"
        for item in parsed:
            assert item.raw == line
            assert not isinstance(item.payload, RawPayload), item.payload
    assert parser.session_id == first_session
    init = parser.feed(lines[0])[0].payload
    assert isinstance(init, InitPayload)
    assert init.session_id == first_session
    assert init.model == "claude-opus-5-5"
    assert "Bash" in init.tools


@pytest.mark.parametrize(
    "name", ["run1.stream.jsonl", "run7-capture-bodies.stream.jsonl", "docker-run1.stream.jsonl"]
)
def test_tool_call_then_answer(name: str) -> None:
    payloads = _payloads(name)
    assert [p.type for p in payloads] == [
        "init",
        "message",
        "tool_use",
        "tool_result",
        "message",
        "usage",
        "result",
    ]
    tool_use, tool_result = payloads[2], payloads[3]
    assert isinstance(tool_use, ToolUsePayload)
    assert tool_use.name == "Bash"
    assert tool_use.input == {"command": "echo hello > hello.txt"}
    assert isinstance(tool_result, ToolResultPayload)
    assert tool_result.tool_use_id == tool_use.tool_use_id
    assert tool_result.output == "(Bash completed with no output)"
    assert not tool_result.is_error
    usage = payloads[5]
    assert isinstance(usage, UsagePayload)
    assert usage.usage == TokenUsage(input_tokens=100, output_tokens=40)
    result = _result(payloads).result
    assert result.status is ResultStatus.SUCCESS
    assert result.provider == "claude"
    assert result.text.startswith("Done: I created hello.txt")
    assert result.cost_usd == pytest.approx(0.0012)
    assert usage.cost_usd == result.cost_usd
    assert result.usage == usage.usage
    assert result.turns == 2
    assert result.terminal_reason == "completed"
    assert result.error is None
    assert result.duration_s > 0


def test_resume_keeps_the_session_id() -> None:
    first = _parse(_lines("run1.stream.jsonl"))[0].session_id
    parser, parsed = _parse(_lines("run2-resume.stream.jsonl"))
    assert parser.session_id == first
    result = _result([p.payload for p in parsed]).result
    assert result.session_id == first
    assert result.status is ResultStatus.SUCCESS
    assert result.text == "Second turn answer without tools (history items: 6)"


def test_sigint_while_streaming_is_cancelled_with_deltas_matching_the_message() -> None:
    payloads = _payloads("run3-sigint.stream.jsonl")
    messages = [p for p in payloads if isinstance(p, MessagePayload) and p.role == "assistant"]
    deltas = [m for m in messages if m.delta]
    full = [m for m in messages if not m.delta]
    assert len(deltas) == 6
    assert len(full) == 1
    assert "".join(d.text for d in deltas) == full[0].text
    assert {d.message_id for d in deltas} == {full[0].message_id}
    assert LifecyclePayload(state="status", detail={"status": "requesting"}) in payloads
    result = _result(payloads).result
    assert result.status is ResultStatus.CANCELLED
    assert result.terminal_reason == "aborted_streaming"
    assert result.error is not None
    assert "ede_diagnostic" in result.error
    assert result.cost_usd == pytest.approx(0.00052)
    assert payloads[-1] == _result(payloads), "the result is the last payload"


def test_sigint_during_a_tool_is_cancelled_and_the_tool_result_is_an_error() -> None:
    payloads = _payloads("run4-sigint-during-tool.stream.jsonl")
    started = [p for p in payloads if isinstance(p, LifecyclePayload)]
    assert [s.state for s in started] == ["task_started", "task_notification"]
    assert started[0].detail["tool_use_id"] == "toolu_07fcf93edf014e0ba123"
    assert started[1].detail["status"] == "stopped"
    tool_result = next(p for p in payloads if isinstance(p, ToolResultPayload))
    assert tool_result.is_error
    assert "rejected" in tool_result.output
    result = _result(payloads).result
    assert result.status is ResultStatus.CANCELLED
    assert result.terminal_reason == "aborted_tools"
    assert result.turns == 3
    # No answer line: the last thing the agent said stands in for the text.
    assert result.text == "I'll create the file."


def test_sigterm_leaves_no_result_line() -> None:
    payloads = _payloads("run5-sigterm.stream.jsonl")
    assert not any(isinstance(p, ResultPayload | UsagePayload) for p in payloads)
    last = payloads[-1]
    assert isinstance(last, ToolResultPayload)
    assert last.is_error
    assert last.output == "Exit code 137"


def test_api_error_under_subtype_success_is_an_error() -> None:
    payloads = _payloads("run6-force-error.stream.jsonl")
    errors = [p for p in payloads if isinstance(p, ErrorPayload)]
    assert errors == [
        ErrorPayload(
            message="API Error: 400 mock: forced error",
            code="invalid_request_error",
            retryable=False,
        )
    ]
    assert not any(isinstance(p, MessagePayload) for p in payloads), "not the agent speaking"
    result = _result(payloads).result
    assert result.status is ResultStatus.ERROR
    assert result.terminal_reason == "api_error"
    assert result.error == "API Error: 400 mock: forced error"
    assert result.text == ""


# --- properties ----------------------------------------------------------------------------


def _stream_bytes(path: Path) -> bytes:
    return path.read_bytes()


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(ALL_TRANSCRIPTS),
    cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=40),
)
def test_any_chunking_of_a_recorded_stream_yields_the_same_events(
    path: Path, cuts: list[int]
) -> None:
    data = _stream_bytes(path)
    bounds = sorted({c % (len(data) + 1) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    assert b"".join(chunks) == data
    _, expected = _parse([raw.decode("utf-8") for raw in data.split(b"\n")])
    _, actual = _parse(list(split_lines(chunks)))
    assert actual == expected


_KNOWN_TYPES = ["system", "assistant", "user", "stream_event", "rate_limit_event", "result"]


@settings(max_examples=300)
@given(
    line=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    junk=st.sampled_from(["", "{", '{"type": "result"', "[]", "null", '"text"', "\x00"]),
)
def test_garbage_lines_never_crash_and_become_raw(line: str, junk: str) -> None:
    line = junk + line
    parsed = ClaudeStreamParser().feed(line)
    if not line.strip():
        assert parsed == []
        return
    if kit.is_json_object(line):
        return  # a valid object is not garbage: the next property covers those
    assert len(parsed) == 1
    assert parsed[0].raw == line
    assert isinstance(parsed[0].payload, RawPayload)


@settings(max_examples=300)
@given(
    kind=st.sampled_from(_KNOWN_TYPES) | st.text(max_size=10),
    fields=st.dictionaries(
        st.sampled_from(
            [
                "subtype",
                "message",
                "event",
                "result",
                "usage",
                "is_error",
                "session_id",
                "rate_limit_info",
                "tools",
                "error",
                "num_turns",
                "total_cost_usd",
            ]
        ),
        json_values,
        max_size=6,
    ),
)
def test_known_types_with_random_fields_never_crash(kind: str, fields: dict[str, Any]) -> None:
    line = json.dumps({"type": kind, **fields})
    for parsed in ClaudeStreamParser().feed(line):
        assert parsed.raw == line


@settings(max_examples=200)
@given(
    blocks=st.lists(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "thinking", "tool_use", "tool_result", "image"])},
            optional={
                "text": json_values,
                "thinking": json_values,
                "id": json_values,
                "name": json_values,
                "input": json_values,
                "tool_use_id": json_values,
                "content": json_values,
            },
        ),
        max_size=4,
    ),
    role=st.sampled_from(["assistant", "user"]),
)
def test_random_content_blocks_never_crash(blocks: list[dict[str, Any]], role: str) -> None:
    line = json.dumps({"type": role, "message": {"content": blocks}})
    parsed = ClaudeStreamParser().feed(line)
    assert parsed, "an assistant/user line always yields at least one payload"
    assert all(p.raw == line for p in parsed)
