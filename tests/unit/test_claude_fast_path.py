"""The claude parser's fast path changes nothing it emits.

Two shortcuts (bench/parser.py measures them): lines are decoded into only the keys the
parser reads (codeyard.adapters.claude._decode), and payloads are built without validation
(codeyard.domain.trusted). Here, over every recorded transcript line, hand-made edge
lines and thousands of mutations of them (each field removed, or replaced by a value of
every JSON kind):

* the parser emits exactly what it emits when every line is decoded in full;
* every payload equals, field for field and type for type, the one validation builds.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, Field, field_validator

from codeyard.adapters.claude import parser as claude_parser
from codeyard.adapters.claude._decode import decode_full, decode_line
from codeyard.adapters.claude.parser import ClaudeStreamParser
from codeyard.adapters.cli.lines import Line, split_lines
from codeyard.domain.events import LifecyclePayload, MessagePayload, RawPayload
from codeyard.domain.trusted import trusted
from tests.unit import parser_support as kit

TRANSCRIPTS = sorted(kit.transcript_dir("claude").glob("*.stream.jsonl"))

_EDGE_OBJECTS: list[dict[str, Any]] = [
    {"type": "system", "subtype": "api_retry", "attempt": 1, "max_retries": 10,
     "error_status": 529, "error": "overloaded"},
    {"type": "system", "subtype": "hook_started", "hook": {"name": "x"}, "uuid": "u"},
    {"type": "rate_limit_event", "rate_limit_info": {"status": "rejected",
     "rateLimitType": "five_hour", "resetsAt": 1}},
    {"type": "rate_limit_event", "rate_limit_info": {"status": "allowed"}},
    {"type": "assistant", "message": {"id": "m", "content": [
        {"type": "thinking", "thinking": "hm", "signature": "s"},
        {"type": "server_tool_use", "id": "t", "name": "web", "input": [1]}]}},
    {"type": "assistant", "is_api_error_message": True, "error": "rate_limit",
     "api_error_status": 429, "message": {"content": [{"type": "text", "text": "no"}]}},
    {"type": "user", "message": {"content": [
        {"type": "tool_result", "tool_use_id": "t", "is_error": True,
         "content": [{"type": "text", "text": "a"}, {"type": "image"}, "b"]},
        {"type": "text", "text": "more"}]}},
    {"type": "stream_event", "event": {"type": "error",
     "error": {"type": "overloaded_error", "message": "busy"}}},
    {"type": "stream_event", "event": {"type": "content_block_delta",
     "delta": {"type": "thinking_delta", "thinking": "x"}}},
    {"type": "result", "subtype": "error_max_turns", "is_error": True, "errors": ["e"],
     "terminal_reason": "aborted_by_user", "usage": {"input_tokens": 3}},
]  # fmt: skip
#: Lines the fast decoder refuses or reads differently from json.loads, all of which must
#: still come out as they always did.
_ODD_LINES = [
    "not json", "[1]", "null", '{"type": "system", "subtype": "status", "x": NaN}',
    '{"type": "result", "subtype": "success", "total_cost_usd": 1e400}',
    '{"type": "assistant", "message": {"content": [{"type": "text", "text": "\\ud800"}]}}',
    '{"type": "user", "message": {"content": "a"}, "message": {"content": "b"}}',
    '{"type": "assistant", "message": {"content": [{"type": "tool_use", "id": "a", '
    '"name": "b", "input": {"x": -Infinity}}]}}',
]  # fmt: skip
_VALUES: list[Any] = [None, 7, 2**70, 0.5, True, "s", [], {}, ["x", 2], {"text": "t"}]


def _runs() -> Iterator[tuple[list[str], str]]:
    """(lines fed before, the line under test): each transcript line and its mutations
    after the transcript's earlier lines (the parser keeps state), then edge lines."""
    for path in TRANSCRIPTS:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
        for index, line in enumerate(lines):
            for variant in _mutations(json.loads(line)):
                yield lines[:index], variant
    for obj in _EDGE_OBJECTS:
        for variant in _mutations(obj):
            yield [], variant
    for line in _ODD_LINES:
        yield [], line


def _mutations(obj: dict[str, Any]) -> Iterator[str]:
    yield json.dumps(obj)
    for path in _paths(obj):
        yield json.dumps(_replaced(obj, path, None, delete=True))
        for value in _VALUES:
            yield json.dumps(_replaced(obj, path, value))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    items = value.items() if isinstance(value, dict) else enumerate(value[:2])
    for key, child in items:
        yield (*prefix, key)
        if isinstance(child, dict | list):
            yield from _paths(child, (*prefix, key))


def _replaced(
    obj: dict[str, Any], path: tuple[Any, ...], value: Any, *, delete: bool = False
) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    parent: Any = out
    for key in path[:-1]:
        parent = parent[key]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


def _emitted(before: list[str], line: str) -> tuple[list[tuple[str, str | None]], Any]:
    parser = ClaudeStreamParser()
    for earlier in before:
        parser.feed(earlier)
    out = parser.feed(line)
    # repr shows what == hides: a list for a tuple, 1 for 1.0.
    return [(repr(p.payload), p.raw) for p in out], (parser.session_id, parser._last_text)


def test_reading_only_the_needed_keys_emits_what_the_full_document_gives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cases = list(_runs())
    assert len(cases) > 5_000
    fast = [_emitted(before, line) for before, line in cases]
    monkeypatch.setattr(claude_parser, "decode_line", decode_full)
    full = [_emitted(before, line) for before, line in cases]
    mismatches = [case[1] for case, a, b in zip(cases, fast, full, strict=True) if a != b]
    assert mismatches == []


def test_the_fast_decoder_declines_what_it_cannot_read_as_json_loads_does() -> None:
    # Refused by msgspec, so decoded in full: the same values json.loads gives.
    assert decode_line('{"type": "x", "v": NaN}')["v"] != 0
    assert decode_line('{"type": "\\ud800"}') == {"type": "\ud800"}
    # Unread keys are dropped, except on the system lines whose payload keeps them all.
    assert decode_line('{"type": "result", "modelUsage": {}}') == {"type": "result"}
    assert decode_line('{"type": "system", "subtype": "status", "x": 1}')["x"] == 1
    assert decode_line('{"type": "system", "subtype": [], "x": 1}')["x"] == 1
    with pytest.raises(ValueError, match="Expecting"):
        decode_line("{")


def test_the_run_loops_lines_take_the_fast_path_too() -> None:
    # The run loop feeds Line, a str subclass, which msgspec alone would refuse.
    for path in TRANSCRIPTS:
        data = path.read_bytes()
        lines = list(split_lines([data]))
        assert all(type(line) is Line for line in lines)
        assert [decode_line(line) for line in lines] == [decode_line(str(s)) for s in lines]
        assert "modelUsage" not in decode_line(Line('{"type": "result", "modelUsage": {}}'))
        fed_lines = [p for line in lines for p in ClaudeStreamParser().feed(line)]
        fed_strs = [p for line in lines for p in ClaudeStreamParser().feed(str(line))]
        assert fed_lines == fed_strs
        assert not any(isinstance(p.payload, RawPayload) for p in fed_lines)


def _assert_as_validated(model: BaseModel) -> None:
    """``model`` is what validating its own field values gives (nested models too)."""
    cls = type(model)
    explicit = {name: getattr(model, name) for name in model.model_fields_set}
    validated = cls(**explicit)
    assert repr(validated) == repr(model)
    assert validated == model
    assert validated.model_fields_set == model.model_fields_set
    assert list(model.__dict__) == list(cls.model_fields)
    for value in model.__dict__.values():
        if isinstance(value, BaseModel):
            _assert_as_validated(value)


def test_every_payload_built_unvalidated_is_the_validated_one() -> None:
    kinds: set[str] = set()
    for before, line in _runs():
        parser = ClaudeStreamParser()
        for earlier in before:
            parser.feed(earlier)
        for parsed in parser.feed(line):
            kinds.add(parsed.payload.type)
            _assert_as_validated(parsed.payload)
    assert kinds >= {"init", "message", "tool_use", "tool_result", "usage", "error"}
    assert kinds >= {"result", "lifecycle", "raw"}


def test_trusted_fills_defaults_and_factories_in_field_order() -> None:
    message = trusted(MessagePayload)(text="hi", role="user")
    assert message == MessagePayload(role="user", text="hi")
    assert list(message.model_dump()) == list(MessagePayload.model_fields)
    assert message.model_fields_set == {"text", "role"}
    first, second = (trusted(LifecyclePayload)(state="s") for _ in range(2))
    assert first.detail == {}
    assert first.detail is not second.detail  # a fresh factory value


class _Checked(BaseModel):
    name: str

    @field_validator("name")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


class _Aliased(BaseModel):
    name: str = Field(alias="Name")


class _MutableDefault(BaseModel):
    items: list[str] = []


@pytest.mark.parametrize("model", [_Checked, _Aliased, _MutableDefault])
def test_trusted_refuses_models_whose_validation_does_more_than_check(
    model: type[BaseModel],
) -> None:
    with pytest.raises(TypeError, match="build it validated"):
        trusted(model)
