"""Issue #9: JSON objects in the domain nest at most JSON_MAX_DEPTH levels, so an event
always serializes (pydantic writes ~255 levels) and reads back (~200)."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel, BeforeValidator, PlainValidator, ValidationInfo, WrapValidator

from codeyard.domain.base import JSON_MAX_DEPTH, JSON_TOO_DEEP, cap_json_depth
from codeyard.domain.events import (
    AgentEvent,
    EventSequencer,
    LifecyclePayload,
    ToolUsePayload,
)
from codeyard.domain.trusted import trusted


def nested(levels: int, leaf: Any = 1) -> Any:
    """``levels`` objects one inside the other (``{"a": {"a": ... leaf}}``)."""
    value = leaf
    for _level in range(levels):
        value = {"a": value}
    return value


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def test_a_value_within_the_cap_is_returned_as_is() -> None:
    value = nested(JSON_MAX_DEPTH)
    assert cap_json_depth(value) is value
    flat = {"command": "ls", "args": ["-l", {"x": [1, 2]}], "n": None}
    assert cap_json_depth(flat) is flat
    assert cap_json_depth("not a dict") == "not a dict"  # for validation to refuse


@pytest.mark.parametrize("levels", [JSON_MAX_DEPTH + 1, 260, 500])
def test_deeper_containers_are_cut_to_a_placeholder(levels: int) -> None:
    value = {"keep": "x", "deep": nested(levels - 1), "list": [nested(levels - 1)]}
    capped = cap_json_depth(value)
    assert depth(capped) == JSON_MAX_DEPTH
    assert capped["keep"] == "x"
    assert capped["deep"] == nested(JSON_MAX_DEPTH - 2, {"a": JSON_TOO_DEEP})
    assert value["deep"] == nested(levels - 1)  # the input is not modified
    assert cap_json_depth(capped) is capped  # idempotent


@pytest.mark.parametrize("levels", [JSON_MAX_DEPTH, JSON_MAX_DEPTH + 1, 299, 990])
def test_events_with_any_nesting_serialize_and_read_back(levels: int) -> None:
    sequencer = EventSequencer(provider="claude")
    validated = ToolUsePayload(tool_use_id="t", name="n", input=nested(levels))
    unvalidated = trusted(ToolUsePayload)(tool_use_id="t", name="n", input=nested(levels))
    assert validated == unvalidated
    detail = LifecyclePayload(state="s", detail=nested(levels))
    for payload in (validated, unvalidated, detail):
        event = sequencer.stamp(payload)
        back = AgentEvent.model_validate_json(event.model_dump_json())
        assert back == event
        assert depth(back.model_dump()) <= JSON_MAX_DEPTH + 2  # envelope + payload
    assert (validated.input == nested(levels)) is (levels <= JSON_MAX_DEPTH)


def test_trusted_leaves_default_factories_alone() -> None:
    first, second = (trusted(ToolUsePayload)(tool_use_id="t", name="n") for _ in range(2))
    assert first.input == {}
    assert first.input is not second.input
    assert first.model_fields_set == {"tool_use_id", "name"}


def _with_info(value: Any, info: ValidationInfo) -> Any:
    return value


class _Plain(BaseModel):
    name: Annotated[str, PlainValidator(str)]


class _Wrapped(BaseModel):
    name: Annotated[str, WrapValidator(lambda value, handler: handler(value))]


class _BeforeWithInfo(BaseModel):
    name: Annotated[str, BeforeValidator(_with_info)]


@pytest.mark.parametrize("model", [_Plain, _Wrapped, _BeforeWithInfo])
def test_trusted_refuses_validators_it_cannot_apply(model: type[BaseModel]) -> None:
    with pytest.raises(TypeError, match="build it validated"):
        trusted(model)
