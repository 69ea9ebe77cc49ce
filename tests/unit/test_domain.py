"""Example-based tests of domain rules that properties do not pin down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from codeyard.domain import errors
from codeyard.domain.agent import AgentRequest, AgentResult, ResultStatus, TokenUsage
from codeyard.domain.container import ImageRecipe
from codeyard.domain.events import (
    AgentEvent,
    EventSequencer,
    EventType,
    MessagePayload,
    RawPayload,
    ResultPayload,
)
from codeyard.domain.streams import parse_stream_id, worker_input_stream, worker_output_stream
from codeyard.domain.task import RetryPolicy
from codeyard.domain.worker import (
    Module,
    NetworkPolicy,
    WorkerRecord,
    WorkerSpec,
    WorkerStatus,
    check_transition,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"prompt": ""}, errors.PromptRequired),
        ({"prompt": " \n\t"}, errors.PromptRequired),
        ({"prompt": "x", "timeout_s": 0}, errors.InvalidTimeout),
        ({"prompt": "x", "timeout_s": -5}, errors.InvalidTimeout),
        ({"prompt": "x", "timeout_s": float("nan")}, errors.InvalidTimeout),
        ({"prompt": "x", "timeout_s": float("inf")}, errors.InvalidTimeout),
        ({"prompt": "x", "timeout_s": 10, "idle_timeout_s": 11}, errors.InvalidTimeout),
        ({"prompt": "x", "provider": "Claude!"}, errors.InvalidName),
        ({"prompt": "x", "worker_id": "../etc"}, errors.InvalidName),
        ({"prompt": "x", "env": {"A=B": "c"}}, errors.InvalidName),
        ({"prompt": "x", "max_turns": 0}, errors.InvalidRequest),
        ({"prompt": "x", "surprise": 1}, errors.InvalidRequest),
        ({"prompt": 42}, errors.InvalidRequest),
    ],
)
def test_invalid_requests_raise_specific_typed_errors(
    kwargs: dict[str, object], error: type[errors.CodeyardError]
) -> None:
    with pytest.raises(error) as info:
        AgentRequest(**kwargs)
    assert isinstance(info.value, errors.InvalidInput)
    assert info.value.to_dict()["code"] == error.code


def test_invalid_request_error_lists_fields_without_echoing_values() -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        AgentRequest.parse({"prompt": "x", "env": {"TOKEN": 123}})
    assert info.value.fields["errors"][0]["loc"] == "env.TOKEN"
    assert "123" not in str(info.value)


def test_requests_are_frozen() -> None:
    request = AgentRequest(prompt="hi")
    with pytest.raises(Exception):  # noqa: B017,PT011 - pydantic's frozen error type
        request.prompt = "changed"  # type: ignore[misc]


def test_errors_round_trip_through_dicts_keeping_type_and_fields() -> None:
    original = errors.LeaseLost("lease expired", job_id="j1", owner="w1")
    rebuilt = errors.error_from_dict(original.to_dict())
    assert type(rebuilt) is errors.LeaseLost
    assert rebuilt.fields == {"job_id": "j1", "owner": "w1"}
    assert isinstance(rebuilt, errors.Conflict)
    unknown = errors.error_from_dict({"code": "from_the_future", "message": "m"})
    assert type(unknown) is errors.CodeyardError
    assert unknown.message == "m"


def test_error_codes_are_unique() -> None:
    with pytest.raises(TypeError, match="used by both"):

        class Clash(errors.CodeyardError):
            code = "lease_lost"


def test_retryable_flags_follow_categories() -> None:
    assert errors.ServiceUnavailable("x").retryable
    assert not errors.RuntimeNotAvailable("x").retryable
    assert not errors.PromptRequired("x").retryable


def test_sequencer_numbers_events_contiguously_and_keeps_raw() -> None:
    seq = EventSequencer(provider="claude", worker_id="w1", run_id="r1")
    first = seq.stamp(MessagePayload(text="a"), raw='{"type":"assistant"}')
    second = seq.stamp(RawPayload(), raw="garbage")
    result = AgentResult(status=ResultStatus.SUCCESS, provider="claude")
    third = seq.stamp(ResultPayload(result=result))
    assert [e.seq for e in (first, second, third)] == [0, 1, 2]
    assert first.raw == '{"type":"assistant"}'
    assert second.type is EventType.RAW
    assert third.is_terminal
    assert not first.is_terminal
    assert {e.worker_id for e in (first, second, third)} == {"w1"}
    assert first.id != second.id


def test_events_reject_naive_timestamps_and_unknown_payload_types() -> None:
    with pytest.raises(errors.InvalidRequest):
        AgentEvent(seq=0, ts=datetime(2026, 1, 1), payload=MessagePayload(text="x"))
    with pytest.raises(errors.InvalidRequest):
        AgentEvent.parse({"seq": 0, "payload": {"type": "telepathy"}})


def test_token_usage_adds_up() -> None:
    a = TokenUsage(input_tokens=1, output_tokens=2, cache_read_tokens=3)
    b = TokenUsage(input_tokens=10, cache_write_tokens=4)
    assert (a + b).total == 20


def test_worker_spec_modules_are_canonical_so_hashes_are_stable() -> None:
    one = WorkerSpec(modules=(Module.PYTHON, Module.GIT, Module.PYTHON))
    two = WorkerSpec(modules=(Module.GIT, Module.PYTHON))
    assert one.modules == two.modules == (Module.GIT, Module.PYTHON)
    with pytest.raises(errors.InvalidRequest):
        WorkerSpec(allowed_hosts=("redis",), network=NetworkPolicy.EGRESS)


def test_terminal_worker_states_are_final() -> None:
    check_transition("w", WorkerStatus.STARTING, WorkerStatus.RUNNING)
    check_transition("w", WorkerStatus.BUSY, WorkerStatus.IDLE)
    for state in WorkerStatus:  # repeating the current state is always allowed
        check_transition("w", state, state)
    with pytest.raises(errors.InvalidTransition) as info:
        check_transition("w", WorkerStatus.STOPPED, WorkerStatus.RUNNING)
    assert info.value.fields == {"worker_id": "w", "current": "stopped", "requested": "running"}
    with pytest.raises(errors.InvalidTransition):
        check_transition("w", WorkerStatus.RUNNING, WorkerStatus.STARTING)


def test_worker_record_staleness_only_for_active_workers() -> None:
    record = WorkerRecord(
        worker_id="w1", spec=WorkerSpec(), created_at=NOW, heartbeat_at=NOW
    ).with_status(WorkerStatus.RUNNING)
    later = NOW + timedelta(seconds=31)
    assert record.is_stale(later, max_age_s=30)
    assert not record.is_stale(later, max_age_s=60)
    assert not record.with_status(WorkerStatus.STOPPED).is_stale(later, max_age_s=30)


def test_retry_policy_backs_off_exponentially_with_a_cap() -> None:
    policy = RetryPolicy(base_s=1, factor=2, max_s=10)
    delays = [policy.delay(n).total_seconds() for n in (1, 2, 3, 4, 5, 10_000)]
    assert delays == [1, 2, 4, 8, 10, 10]


def test_image_recipe_hash_covers_inputs_and_ignores_module_order() -> None:
    base = ImageRecipe(base_image="ubuntu:24.04", modules=(Module.GIT, Module.NODE))
    same = ImageRecipe(base_image="ubuntu:24.04", modules=(Module.NODE, Module.GIT))
    other = base.model_copy(update={"ca_certs_hash": "abc"})
    assert base.content_hash() == same.content_hash()
    assert base.content_hash() != other.content_hash()
    assert base.tag.startswith("codeyard-worker:")
    assert len(base.tag.split(":")[1]) == 16


def test_stream_names_and_ids() -> None:
    assert worker_input_stream("w1") == "worker:w1:input"
    assert worker_output_stream("w1") == "worker:w1:output"
    assert parse_stream_id("1700000000000-3") == (1700000000000, 3)
    assert parse_stream_id("5") == (5, 0)
    with pytest.raises(ValueError, match="invalid literal"):
        parse_stream_id("x-1")
