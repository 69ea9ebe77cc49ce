"""Byte-level fuzzing of every provider parser (issue #9): random bytes and mutated
recorded lines never make a parser raise or hang, and everything it yields serializes.
See tests/faults/parser_fuzz.py; bench/soak_fuzz.py runs the same with more examples."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from codeyard.domain.base import JSON_MAX_DEPTH, JSON_TOO_DEEP
from codeyard.domain.events import MessagePayload, ToolUsePayload
from tests.faults import parser_fuzz as fuzz

pytestmark = pytest.mark.faults

_TARGETS = {t.name: t for t in fuzz.TARGETS}
_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Found by this fuzzing: json.loads raised RecursionError (not a ValueError) on deeply
# nested input, which codex, gemini and both OpenCode parsers let escape.
_DEEP_ARRAY = b"[" * 20_000 + b"]" * 20_000 + b"\n"
_DEEP_VALUE = b'{"type":"item.completed","item":' + b"[" * 20_000 + b"]" * 20_000 + b"}\n"
# Found too: a tool input nested ~300 deep is valid JSON that the domain model refused with
# InvalidRequest (a CodeyardError, not a ValueError), which codex, gemini and opencode let
# escape (it is cut at JSON_MAX_DEPTH now); and gemini's token counts turned 1e999 (inf)
# into OverflowError.
_NEST = b'{"a":' * 300 + b"1" + b"}" * 300
_DEEP_TOOL_INPUT = (
    b'{"type":"tool_use","tool_name":"sh","tool_id":"t1","parameters":' + _NEST + b"}\n"
    b'{"type":"item.started","item":{"id":"i1","type":"mcp_tool_call","server":"s",'
    b'"tool":"t","arguments":' + _NEST + b',"status":"in_progress"}}\n'
    b'{"type":"tool_use","sessionID":"s","part":{"type":"tool","tool":"bash","callID":"c",'
    b'"state":{"status":"completed","input":' + _NEST + b',"output":"ok"}}}\n'
)
_HUGE_TOKENS = (
    b'{"type":"result","status":"success","stats":{"input_tokens":1e999,"input":1e999}}\n'
)


@pytest.mark.parametrize("name", sorted(_TARGETS))
@_SETTINGS
@given(data=st.data())
def test_random_bytes_never_crash_a_parser(name: str, data: st.DataObject) -> None:
    target = _TARGETS[name]
    fuzz.check(target, data.draw(fuzz.blobs(target)))


@pytest.mark.parametrize("name", sorted(_TARGETS))
@settings(max_examples=20, deadline=None)
@given(blob=st.binary(max_size=64))
@example(blob=_DEEP_ARRAY)
@example(blob=_DEEP_VALUE)
@example(blob=b"data: " + _DEEP_VALUE + b"\n")
@example(blob=_DEEP_TOOL_INPUT)
@example(blob=_HUGE_TOKENS)
def test_deeply_nested_json_never_crashes_a_parser(name: str, blob: bytes) -> None:
    fuzz.check(_TARGETS[name], blob)


@pytest.mark.parametrize("name", sorted(_TARGETS))
@_SETTINGS
@given(data=st.data())
def test_mutated_recorded_lines_never_crash_a_parser(name: str, data: st.DataObject) -> None:
    target = _TARGETS[name]
    fuzz.check(target, data.draw(fuzz.mutants(target)))


@pytest.mark.parametrize("name", sorted(_TARGETS))
def test_the_recorded_transcripts_parse_to_something(name: str) -> None:
    """The fuzzing's seeds reach the parsers' real paths, not only their raw fallback."""
    target = _TARGETS[name]
    separator = b"" if target.sse else b"\n"
    parsed = fuzz.check(target, separator.join(target.samples) + separator)
    assert {p.payload.type for p in parsed} - {"raw"}, name


# Found by this fuzzing too (fixed, issue #9): a JSON-escaped lone surrogate (Node's
# JSON.stringify prints one for a cut emoji) became a str pydantic cannot serialize; the
# line splitter now rewrites such escapes to \ufffd, for every provider at once.
_SURROGATE_LINES = {
    "claude": b'{"type":"assistant","message":{"id":"m","role":"assistant",'
    b'"content":[{"type":"text","text":"a\\ud800"}]}}\n',
    "codex": b'{"type":"item.completed","item":{"id":"i","type":"agent_message",'
    b'"text":"a\\ud800"}}\n',
}


@pytest.mark.parametrize("name", sorted(_SURROGATE_LINES))
def test_a_lone_surrogate_escape_yields_a_payload_that_serializes(name: str) -> None:
    parsed = fuzz.check(_TARGETS[name], _SURROGATE_LINES[name])
    assert [p.payload.type for p in parsed] == ["message"]
    fuzz.strict_dump(parsed[0].payload)
    event = fuzz.round_trip(parsed[0])
    assert isinstance(event.payload, MessagePayload)
    assert event.payload.text == "a\ufffd"


@pytest.mark.parametrize("name", sorted(_SURROGATE_LINES))
def test_an_escaped_surrogate_pair_is_kept(name: str) -> None:
    line = _SURROGATE_LINES[name].replace(b"\\ud800", b"\\ud83d\\ude00")
    parsed = fuzz.check(_TARGETS[name], line)
    payload = parsed[0].payload
    assert isinstance(payload, MessagePayload)
    assert payload.text == "a\U0001f600"


# Found by this fuzzing too (fixed, issue #9): the domain accepted a JSON value nested up
# to ~299 deep, pydantic serializes ~255 at most (and reads back ~200 from JSON). JsonObject
# fields now cut what nests deeper than JSON_MAX_DEPTH, trusted builders (claude) included.
@pytest.mark.parametrize(
    ("name", "line"),
    [
        (
            "claude",
            b'{"type":"assistant","message":{"id":"m","role":"assistant","content":'
            b'[{"type":"tool_use","id":"t","name":"n","input":%s}]}}\n',
        ),
        (
            "codex",
            b'{"type":"item.started","item":{"id":"i1","type":"mcp_tool_call","server":"s",'
            b'"tool":"t","arguments":%s,"status":"in_progress"}}\n',
        ),
    ],
)
def test_a_tool_input_nested_260_deep_yields_a_payload_that_serializes(
    name: str, line: bytes
) -> None:
    nest = b'{"a":' * 260 + b"1" + b"}" * 260
    parsed = fuzz.check(_TARGETS[name], line % nest)
    assert [p.payload.type for p in parsed] == ["tool_use"]
    fuzz.strict_dump(parsed[0].payload)
    payload = fuzz.round_trip(parsed[0]).payload
    assert isinstance(payload, ToolUsePayload)
    value: Any = payload.input
    for _level in range(JSON_MAX_DEPTH - 1):
        value = value["a"]
    assert value == {"a": JSON_TOO_DEEP}
