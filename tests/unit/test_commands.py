"""The command protocol on ``worker:commands``: parsing, salvage, replies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeyard.domain.commands import (
    COMMAND_FIELD,
    AnyCommand,
    CreateWorker,
    DeleteWorker,
    GetLogs,
    GetStatus,
    ListWorkers,
    Reply,
    SendPrompt,
    command_fields,
    parse_command,
    salvaged_reply_stream,
)
from codeyard.domain.errors import InvalidCommand, InvalidRequest, WorkerNotFound
from codeyard.domain.streams import response_stream
from codeyard.domain.worker import NetworkPolicy, WorkerSpec

COMMANDS: list[AnyCommand] = [
    CreateWorker(
        request_id="r1",
        spec=WorkerSpec(instructions="be brief", network=NetworkPolicy.NONE),
        prompt="hello",
        worker_id="w1",
    ),
    DeleteWorker(request_id="r2", worker_id="w1"),
    GetStatus(request_id="r3", worker_id="w1", reply_to="client:7:replies"),
    ListWorkers(request_id="r4"),
    GetLogs(request_id="r5", worker_id="w1", tail=5),
    SendPrompt(request_id="r6", worker_id="w1", prompt="go on", new_session=True, max_turns=3),
]


def entry(doc: Any) -> dict[str, str]:
    return {COMMAND_FIELD: json.dumps(doc)}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.type)
def test_every_command_round_trips_through_its_entry(command: AnyCommand) -> None:
    assert parse_command(command_fields(command)) == command


def test_reply_stream_defaults_to_the_request_response_stream() -> None:
    assert ListWorkers(request_id="abc").reply_stream == response_stream("abc")
    assert ListWorkers(request_id="abc", reply_to="mine").reply_stream == "mine"


@pytest.mark.parametrize(
    ("fields", "salvaged"),
    [
        ({"other": "x"}, None),
        ({COMMAND_FIELD: "not json"}, None),
        ({COMMAND_FIELD: "[1, 2]"}, None),
        (entry({"type": "list"}), None),  # missing request_id
        (entry({"type": "list", "request_id": "bad id!"}), None),
        (entry({"type": "explode", "request_id": "r1"}), response_stream("r1")),
        (entry({"type": "logs", "request_id": "r1", "worker_id": "w", "tail": 0}), "r1"),
        (entry({"type": "list", "request_id": "bad id!", "reply_to": "to-me"}), "to-me"),
        (entry({"type": "delete", "request_id": "r1", "reply_to": "to-me"}), "to-me"),
        (entry({"type": "send", "request_id": "r1", "worker_id": "w", "prompt": " "}), "r1"),
        (entry({"type": "list", "request_id": "r1", "extra": 1}), "r1"),
        (entry({"type": "create", "request_id": "r1", "spec": {"cpus": 1}}), "r1"),
        (entry({"type": "create", "request_id": "r1", "worker_id": "a b"}), "r1"),
        ({COMMAND_FIELD: "[" * 100_000}, None),
        ({COMMAND_FIELD: "9" * 10_000}, None),
    ],
)
def test_garbage_raises_invalid_command_with_what_could_be_salvaged(
    fields: dict[str, str], salvaged: str | None
) -> None:
    with pytest.raises(InvalidCommand) as caught:
        parse_command(fields)
    expected = response_stream(salvaged) if salvaged == "r1" else salvaged
    assert salvaged_reply_stream(caught.value) == expected


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=10), st.text(max_size=50), max_size=3))
def test_random_entries_raise_only_invalid_command(fields: dict[str, str]) -> None:
    with pytest.raises(InvalidCommand):
        parse_command(fields)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@settings(max_examples=300)
@given(json_values)
def test_random_json_without_a_type_raises_only_invalid_command(doc: object) -> None:
    with pytest.raises(InvalidCommand):
        parse_command(entry(doc))


def test_success_reply_round_trips() -> None:
    reply = Reply.success("r1", {"worker_id": "w1", "n": [1, 2]})
    again = Reply.from_fields(reply.to_fields())
    assert again == reply
    again.raise_for_error()  # ok replies raise nothing
    assert again.error_code is None


def test_failure_reply_rebuilds_the_typed_error() -> None:
    error = WorkerNotFound("gone", worker_id="w")
    reply = Reply.from_fields(Reply.failure("r1", error).to_fields())
    assert not reply.ok
    assert reply.error_code == "worker_not_found"
    with pytest.raises(WorkerNotFound) as caught:
        reply.raise_for_error()
    assert caught.value.fields == {"worker_id": "w"}


def test_internal_reply_has_the_internal_code() -> None:
    assert Reply.internal("r1", "KeyError").error_code == "internal"


def test_a_reply_is_ok_exactly_when_it_has_no_error() -> None:
    with pytest.raises(InvalidRequest):
        Reply(request_id="r", ok=True, error={"code": "x"})
    with pytest.raises(InvalidRequest):
        Reply(request_id="r", ok=False)


def test_reply_from_a_foreign_entry_is_typed() -> None:
    with pytest.raises(InvalidRequest):
        Reply.from_fields({"something": "else"})
    with pytest.raises(InvalidRequest):
        Reply.from_fields({"reply": "{"})
