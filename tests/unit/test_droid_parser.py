"""DroidStreamParser over every recorded ``droid exec --output-format stream-json``
transcript, plus properties (chunking never matters, garbage never crashes)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeyard.adapters.cli.types import Parsed
from codeyard.adapters.droid import DroidStreamParser
from codeyard.adapters.droid.parser import is_retryable
from codeyard.domain.agent import ResultStatus, TokenUsage
from codeyard.domain.events import (
    ErrorPayload,
    InitPayload,
    MessagePayload,
    RawPayload,
    ResultPayload,
    ToolResultPayload,
    ToolUsePayload,
    UsagePayload,
)
from tests.unit import parser_support as kit
from tests.unit.parser_support import the_result

#: Copies of the real droid 0.215.0 output: agent-transcripts/droid/*.stream.jsonl and
#: docker/droid.stream.jsonl (as docker-run1), verbatim; local-* were recorded the same way
#: for this adapter (see the README next to them).
TRANSCRIPTS = kit.transcript_dir("droid")
ALL_TRANSCRIPTS = sorted(TRANSCRIPTS.glob("*.stream.jsonl"))
#: Runs cut short before Droid's last line (signals, resume refused offline...).
UNFINISHED = {
    "run2-resume.stream.jsonl",
    "run2b-resume-no-airgap.stream.jsonl",
    "run3-sigint.stream.jsonl",
    "run4-stream-json-input-multiturn.stream.jsonl",
    "run4b-stream-json-input-no-airgap.stream.jsonl",
}
_read = functools.partial(kit.read_transcript, TRANSCRIPTS)


def feed_all(lines: list[str], parser: DroidStreamParser | None = None) -> list[Parsed]:
    return kit.feed_each(parser or DroidStreamParser(), lines)


def payloads_of(parsed: list[Parsed], kind: type[Any]) -> list[Any]:
    return [p.payload for p in parsed if isinstance(p.payload, kind)]


# --- every transcript ----------------------------------------------------------------------


def test_the_recorded_transcripts_are_all_there() -> None:
    names = {p.name for p in ALL_TRANSCRIPTS}
    assert {"run1.stream.jsonl", "run6-force-error.stream.jsonl", "docker-run1.stream.jsonl"} <= (
        names
    )
    assert len(names) == 17


@pytest.mark.parametrize("path", ALL_TRANSCRIPTS, ids=lambda p: p.name)
def test_every_transcript_is_understood_line_by_line(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    parser = DroidStreamParser()
    parsed: list[Parsed] = []
    for line in lines:
        out = parser.feed(line)
        assert out, f"{path.name}: a line gave nothing: {line}"
        assert all(p.raw == line for p in out), "every payload keeps its line verbatim"
        assert not [p for p in out if isinstance(p.payload, RawPayload)], f"not understood: {line}"
        parsed += out
    results = payloads_of(parsed, ResultPayload)
    if path.name in UNFINISHED:
        assert results == []
    else:
        assert the_result(parsed).result.provider == "droid"
    if lines:
        sessions = {json.loads(line)["session_id"] for line in lines}
        assert sessions == {parser.session_id}
        assert isinstance(parsed[0].payload, InitPayload)
        assert parsed[0].payload.session_id == parser.session_id


@pytest.mark.parametrize(
    ("name", "call_id", "model"),
    [
        ("run1.stream.jsonl", "toolu_649119fb70f54044a7c2", "custom:Mock-Anthropic-0"),
        ("run1c-Mock-Chat-1.stream.jsonl", "call_01925675a55b447980bb", "custom:Mock-Chat-0"),
        (
            "run1c-Mock-Responses-2.stream.jsonl",
            "call_19cbe44a22a64ad883da",
            "custom:Mock-Responses-0",
        ),
    ],
)
def test_a_tool_call_then_an_answer_over_each_wire_api(name: str, call_id: str, model: str) -> None:
    parsed = feed_all(_read(name))
    assert [p.payload.type for p in parsed] == [
        "init",
        "message",
        "message",
        "tool_use",
        "tool_result",
        "message",
        "usage",
        "result",
    ]
    init = parsed[0].payload
    assert isinstance(init, InitPayload)
    assert init.model == model
    assert init.cwd == "/home/user/work/droid1"
    assert {"Execute", "Create", "Read"} <= set(init.tools)
    user, said, answer = payloads_of(parsed, MessagePayload)
    assert (user.role, user.text) == ("user", "create hello.txt")
    assert (said.role, said.text, said.delta) == ("assistant", "I'll create the file.", False)
    assert said.message_id
    assert answer.text.startswith("Done: I created hello.txt")
    [use] = payloads_of(parsed, ToolUsePayload)
    assert (use.tool_use_id, use.name) == (call_id, "Execute")
    assert use.input == {"command": "echo hello > hello.txt", "summary": "Create hello.txt"}
    [tool_result] = payloads_of(parsed, ToolResultPayload)
    assert tool_result.tool_use_id == call_id
    assert not tool_result.is_error
    assert "[Process exited with code 0]" in tool_result.output
    [usage] = payloads_of(parsed, UsagePayload)
    result = the_result(parsed).result
    assert result.status is ResultStatus.SUCCESS
    assert result.text == answer.text
    assert result.turns == 2
    assert result.usage == usage.usage == TokenUsage(input_tokens=100, output_tokens=40)
    assert result.session_id == init.session_id
    assert 0.4 < result.duration_s < 0.6
    assert result.cost_usd is None, "factory_credits are not dollars"


@pytest.mark.parametrize(
    "name", ["run3-sigint-during-tool.stream.jsonl", "run5-sigterm-during-tool.stream.jsonl"]
)
def test_a_signal_during_a_tool_kills_only_the_tool(name: str) -> None:
    # What FACTS.md warns about: the tool fails, Droid carries on and completes the turn.
    parsed = feed_all(_read(name))
    [tool_result] = payloads_of(parsed, ToolResultPayload)
    assert tool_result.is_error
    assert tool_result.output == "Error: Command terminated by signal: SIGTERM"
    assert the_result(parsed).result.status is ResultStatus.SUCCESS


def test_sigint_while_waiting_for_the_model_ends_without_a_result() -> None:
    parser = DroidStreamParser()
    parsed = feed_all(_read("run3-sigint.stream.jsonl"), parser)
    assert [p.payload.type for p in parsed] == ["init", "message"]
    assert parser.session_id == "5f605f43-4577-4491-98fc-0693b2999a8f"


def test_a_rejected_request_ends_with_an_error_result_naming_the_cause() -> None:
    parsed = feed_all(_read("run6-force-error.stream.jsonl"))
    assert [p.payload.type for p in parsed] == ["init", "message", "error", "error", "result"]
    model_error, cli_error = payloads_of(parsed, ErrorPayload)
    assert model_error.code == "agent_loop"
    assert model_error.message.startswith("400 ")
    assert not model_error.retryable
    assert (cli_error.code, cli_error.message) == ("cli", "Exec failed")
    result = the_result(parsed).result
    assert result.status is ResultStatus.ERROR
    assert result.error == model_error.message
    assert "mock: forced error" in (result.error or "")
    assert result.terminal_reason == "Exec failed"
    assert result.session_id == "5ced2fc5-b68e-49dd-a7e8-0aad168f2e72"


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("local-529-retries-exhausted.stream.jsonl", "529"),
        ("local-500-retries-exhausted.stream.jsonl", "500"),
    ],
)
def test_retries_exhausted_is_a_retryable_error(name: str, status: str) -> None:
    parsed = feed_all(_read(name))
    model_error = payloads_of(parsed, ErrorPayload)[0]
    assert model_error.message.startswith(status)
    assert model_error.retryable
    result = the_result(parsed).result
    assert result.status is ResultStatus.ERROR
    assert (result.error or "").startswith(status)


def test_a_refused_command_ends_the_turn_with_an_error_result() -> None:
    parsed = feed_all(_read("local-auto-low-denied.stream.jsonl"))
    [tool_result] = payloads_of(parsed, ToolResultPayload)
    assert tool_result.is_error
    assert "insufficient permission" in tool_result.output
    [cli_error] = payloads_of(parsed, ErrorPayload)
    result = the_result(parsed).result
    assert result.status is ResultStatus.ERROR
    # No earlier model error: the cli error is its own cause.
    assert result.error == result.terminal_reason == cli_error.message
    assert "insufficient permission" in cli_error.message


# --- odd shapes ----------------------------------------------------------------------------


def _one(event: dict[str, Any]) -> Any:
    [parsed] = DroidStreamParser().feed(json.dumps(event))
    return parsed.payload


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json at all", "not json"),
        ("[1, 2]", "not a json object"),
        ('"text"', "not a json object"),
        ('{"type": "telepathy"}', "unknown droid event type"),
        ('{"no_type": 1}', "unknown droid event type"),
        ('{"type": "system", "subtype": "shutdown"}', "unknown droid event type"),
        ('{"type": "message", "role": "robot", "text": "hi"}', "malformed droid message"),
        ('{"type": "message", "role": "assistant", "text": 5}', "malformed droid message"),
        ('{"type": "tool_call", "toolName": "Execute"}', "malformed droid tool_call"),
        ('{"type": "tool_result", "id": 7}', "malformed droid tool_result"),
        ('{"type": "error", "source": "cli"}', "malformed droid error"),
        ("[" * 100_000, "not json"),
        (json.dumps({"type": ["x"] * 1000}), "unknown droid event type"),
    ],
)
def test_unknown_and_malformed_lines_are_kept_raw(line: str, reason: str) -> None:
    [parsed] = DroidStreamParser().feed(line)
    assert isinstance(parsed.payload, RawPayload)
    assert parsed.payload.reason.startswith(reason)
    assert len(parsed.payload.reason) < 200, "the line itself is in raw, not in the reason"
    assert parsed.raw == line


def test_blank_lines_carry_nothing() -> None:
    assert DroidStreamParser().feed("") == []
    assert DroidStreamParser().feed("  \t") == []


def test_tool_shapes_the_transcripts_do_not_show() -> None:
    use = _one({"type": "tool_call", "id": "t1", "toolId": "Read", "parameters": ["a"]})
    assert (use.name, use.input) == ("Read", {"input": ["a"]})
    bare = _one({"type": "tool_call", "id": "t2", "toolName": "LS"})
    assert bare.input == {}
    structured = _one({"type": "tool_result", "id": "t1", "value": {"files": ["a"]}})
    assert json.loads(structured.output) == {"files": ["a"]}
    empty = _one({"type": "tool_result", "id": "t2", "isError": True})
    assert (empty.output, empty.is_error) == ("", True)


def test_odd_completion_numbers_become_zero_not_a_crash() -> None:
    parsed = DroidStreamParser().feed(
        json.dumps(
            {
                "type": "completion",
                "finalText": "ok",
                "numTurns": True,
                "durationMs": -5,
                "usage": {"input_tokens": -1, "output_tokens": "9", "cache_read_input_tokens": 3.7},
            }
        )
    )
    usage, result = (p.payload for p in parsed)
    assert isinstance(usage, UsagePayload)
    assert isinstance(result, ResultPayload)
    assert usage.usage == TokenUsage(cache_read_tokens=3)
    assert (result.result.turns, result.result.duration_s) == (0, 0.0)


def test_turns_fall_back_to_the_assistant_messages_seen() -> None:
    parser = DroidStreamParser()
    for text in ("one", "two", "three"):
        parser.feed(json.dumps({"type": "message", "role": "assistant", "text": text}))
    [_, result] = parser.feed(json.dumps({"type": "completion", "finalText": "three"}))
    assert isinstance(result.payload, ResultPayload)
    assert result.payload.result.turns == 3


@pytest.mark.parametrize(
    ("message", "retryable"),
    [
        ("529 overloaded", True),
        ("429 {}", True),
        ("503 unavailable", True),
        ("Connection error.", True),
        ("400 bad request", False),
        ("401 invalid x-api-key", False),
        ("Exec failed", False),
    ],
)
def test_which_errors_are_retryable(message: str, retryable: bool) -> None:
    assert is_retryable(message) is retryable


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_chunking_of_a_transcript_gives_the_same_events(data: st.DataObject) -> None:
    kit.check_any_chunking(data, [p for p in ALL_TRANSCRIPTS if p.stat().st_size], feed_all)


_KNOWN_TYPES = ["system", "message", "tool_call", "tool_result", "error", "completion"]
_FIELDS = ["subtype", "role", "text", "id", "toolName", "toolId", "parameters", "isError"]
_FIELDS += ["value", "error", "source", "message", "finalText", "numTurns", "durationMs"]
_fields = st.sampled_from([*_FIELDS, "usage", "session_id"])
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)
fuzzy_events = st.builds(
    lambda kind, extra: {"type": kind, **extra},
    st.sampled_from(_KNOWN_TYPES) | st.text(max_size=8),
    st.dictionaries(_fields, _values, max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(lines=kit.garbage_lines(fuzzy_events, max_size=12))
def test_garbage_never_crashes_and_every_line_is_kept(lines: list[str]) -> None:
    parser = DroidStreamParser()
    for line in lines:
        parsed = parser.feed(line)
        if not line.strip():
            assert parsed == []
            continue
        assert parsed, "a non-blank line is never lost"
        assert all(p.raw == line for p in parsed)
        assert sum(isinstance(p.payload, ResultPayload) for p in parsed) <= 1


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(st.text(max_size=60), min_size=1, max_size=8))
def test_text_that_is_not_a_json_object_becomes_raw_events(lines: list[str]) -> None:
    parser = DroidStreamParser()
    for line in lines:
        try:
            is_object = isinstance(json.loads(line), dict)
        except ValueError:
            is_object = False
        if is_object or not line.strip():
            continue
        [parsed] = parser.feed(line)
        assert isinstance(parsed.payload, RawPayload)
        assert parsed.raw == line
