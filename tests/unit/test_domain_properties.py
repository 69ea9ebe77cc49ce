"""Property tests: domain models survive JSON unchanged; bad input only ever raises ours."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from codeyard.domain.agent import AgentRequest, AgentResult
from codeyard.domain.base import DomainModel
from codeyard.domain.errors import CodeyardError, InvalidInput
from codeyard.domain.events import AgentEvent
from tests.unit.strategies import agent_events, agent_requests, agent_results, json_values


@given(agent_requests())
def test_agent_request_round_trips_through_json(request: AgentRequest) -> None:
    assert AgentRequest.parse(request.model_dump_json()) == request
    assert AgentRequest.parse(json.loads(request.model_dump_json())) == request


@given(agent_events())
def test_agent_event_round_trips_through_json(event: AgentEvent) -> None:
    again = AgentEvent.parse(event.model_dump_json())
    assert again == event
    assert again.type == event.type
    assert again.payload.type == event.payload.type


@given(agent_results())
def test_agent_result_round_trips_through_json(result: AgentResult) -> None:
    assert AgentResult.parse(result.model_dump_json()) == result


# Arbitrary mappings built mostly from AgentRequest's own keys, so hypothesis explores
# near-valid inputs (wrong types, empty prompts, bad timeouts) and not only garbage.
REQUEST_KEYS = [*AgentRequest.model_fields, "unknown"]
request_like = st.dictionaries(st.sampled_from(REQUEST_KEYS) | st.text(max_size=5), json_values)


def outcome_of(build: Callable[[], DomainModel]) -> DomainModel | CodeyardError:
    """The model built, or the codeyard error raised; any other exception propagates."""
    try:
        return build()
    except CodeyardError as exc:
        return exc


def check_typed_outcome(outcome: DomainModel | CodeyardError) -> None:
    if isinstance(outcome, CodeyardError):
        assert isinstance(outcome, InvalidInput), repr(outcome)
        assert outcome.to_dict()["code"] == outcome.code
    else:
        # Whatever was accepted must survive its own JSON unchanged.
        assert type(outcome).parse(outcome.model_dump_json()) == outcome


@settings(max_examples=300)
@given(request_like)
def test_invalid_request_mappings_raise_only_typed_errors(data: dict[str, Any]) -> None:
    check_typed_outcome(outcome_of(lambda: AgentRequest.parse(data)))


@settings(max_examples=300)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_arbitrary_json_documents_raise_only_typed_errors(doc: bytes | str) -> None:
    for model in (AgentRequest, AgentEvent, AgentResult):
        check_typed_outcome(outcome_of(lambda model=model: model.parse(doc)))  # type: ignore[misc]


@settings(max_examples=200)
@given(request_like)
def test_direct_construction_raises_only_typed_errors(data: dict[str, Any]) -> None:
    kwargs = {k: v for k, v in data.items() if k.isidentifier()}
    check_typed_outcome(outcome_of(lambda: AgentRequest(**kwargs)))
