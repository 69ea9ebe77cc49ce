"""Issue #9, continued: JSON a caller hands over (a command, a job's payload or result) is
refused with a typed error when it nests deeper than JSON_MAX_DEPTH, and a reply (whatever
a handler or a raiser put in it) is capped so it always goes out and reads back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeyard.domain.base import JSON_MAX_DEPTH, JSON_TOO_DEEP
from codeyard.domain.commands import (
    COMMAND_FIELD,
    GetStatus,
    Reply,
    parse_command,
    salvaged_reply_stream,
)
from codeyard.domain.errors import InvalidCommand, InvalidRequest, WorkerNotFound
from codeyard.domain.task import Job
from tests.unit.test_json_depth import depth, nested

NOW = datetime(2025, 1, 1, tzinfo=UTC)
#: Deeper than any Python or pydantic recursion limit a naive walk would hit.
ABSURD = 20_000


def job(**fields: Any) -> Job:
    return Job(queue="q", available_at=NOW, created_at=NOW, updated_at=NOW, **fields)


def command_entry(doc: dict[str, Any]) -> dict[str, str]:
    return {COMMAND_FIELD: json.dumps(doc)}


@pytest.mark.parametrize("levels", [JSON_MAX_DEPTH, 150, 250, 900])
@pytest.mark.parametrize("field", ["spec", "extra"])
def test_an_over_deep_command_is_an_invalid_command_that_can_still_be_answered(
    levels: int, field: str
) -> None:
    # The command object is level 1: ``levels`` more inside it.
    doc = {"type": "create", "request_id": "r-deep", "reply_to": "client:1", field: nested(levels)}
    with pytest.raises(InvalidCommand) as caught:
        parse_command(command_entry(doc))
    assert "nested deeper" in caught.value.message
    assert caught.value.fields == {"request_id": "r-deep", "reply_to": "client:1"}
    assert salvaged_reply_stream(caught.value) == "client:1"


def test_a_command_at_the_depth_cap_is_judged_on_its_fields_not_its_depth() -> None:
    doc = {"type": "create", "request_id": "r1", "spec": nested(JSON_MAX_DEPTH - 1)}
    with pytest.raises(InvalidCommand) as caught:
        parse_command(command_entry(doc))
    assert "nested deeper" not in caught.value.message  # refused: "a" is no WorkerSpec key
    assert caught.value.message.startswith("malformed command")


def test_json_too_deep_for_the_parser_is_an_invalid_command() -> None:
    raw = '{"type": "list", "request_id": "r1", "x": ' + "[" * ABSURD + "]" * ABSURD + "}"
    with pytest.raises(InvalidCommand, match="not JSON"):
        parse_command({COMMAND_FIELD: raw})


@given(levels=st.integers(min_value=JSON_MAX_DEPTH, max_value=400))
@settings(max_examples=25, deadline=None)
def test_over_deep_list_nesting_anywhere_in_a_command_is_refused(levels: int) -> None:
    doc: dict[str, Any] = {"type": "status", "request_id": "r1", "worker_id": "w1"}
    doc["worker_id"] = [0]
    for _level in range(levels - 1):
        doc["worker_id"] = [doc["worker_id"]]
    with pytest.raises(InvalidCommand, match="nested deeper"):
        parse_command(command_entry(doc))


def test_a_command_within_the_cap_still_parses() -> None:
    parsed = parse_command(command_entry({"type": "status", "request_id": "r1", "worker_id": "w"}))
    assert parsed == GetStatus(request_id="r1", worker_id="w")


@pytest.mark.parametrize("field", ["payload", "result"])
def test_a_job_at_the_cap_round_trips(field: str) -> None:
    fields = {"payload": {}, field: nested(JSON_MAX_DEPTH)}
    made = job(**fields)
    assert Job.parse(made.model_dump_json()) == made
    assert getattr(made, field) == nested(JSON_MAX_DEPTH)


@pytest.mark.parametrize("levels", [JSON_MAX_DEPTH + 1, 210, 300, ABSURD])
@pytest.mark.parametrize("field", ["payload", "result"])
def test_an_over_deep_job_payload_or_result_is_refused_with_a_typed_error(
    levels: int, field: str
) -> None:
    fields = {"payload": {}, field: nested(levels)}
    with pytest.raises(InvalidRequest, match="nested deeper") as caught:
        job(**fields)
    assert caught.value.fields == {"max_depth": JSON_MAX_DEPTH}
    with pytest.raises(InvalidRequest, match="nested deeper"):
        Job.parse({**job(payload={}).model_dump(), **fields})


@pytest.mark.parametrize("levels", [JSON_MAX_DEPTH + 1, 210, 300, ABSURD])
def test_an_over_deep_reply_result_is_cut_and_reads_back(levels: int) -> None:
    reply = Reply.success("r1", [nested(levels - 1)])
    back = Reply.from_fields(reply.to_fields())
    assert back == reply
    assert depth(back.result) == JSON_MAX_DEPTH
    assert JSON_TOO_DEEP in reply.to_fields()["reply"]


def test_an_error_with_absurdly_deep_fields_still_makes_a_reply() -> None:
    error = WorkerNotFound("no such worker", worker_id="w1", detail=nested(ABSURD))
    reply = Reply.failure("r1", error)
    back = Reply.from_fields(reply.to_fields())
    assert back.error_code == "worker_not_found"
    assert back.error is not None
    assert depth(back.error) == JSON_MAX_DEPTH
    with pytest.raises(WorkerNotFound) as caught:
        back.raise_for_error()
    assert caught.value.fields["worker_id"] == "w1"
