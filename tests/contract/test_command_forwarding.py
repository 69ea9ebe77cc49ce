"""CommandService forwarding (:class:`Forward`) against both EventBus adapters.

A handler returns ``Forward(stream)`` when another manager (the one whose Docker engine
runs the worker) must run the command: the service re-publishes the entry there, ACKs it
and does not reply; the target replies. Helpers and the ``bus`` fixture come from
``test_command_service``.
"""

from __future__ import annotations

import uuid

import pytest
from pydantic import JsonValue

from codeyard.app.command_service import FORWARDED_FIELD, Forward, forward_count
from codeyard.domain.commands import AnyCommand, GetStatus, ListWorkers, Reply, command_fields
from codeyard.domain.errors import ForwardLoop
from codeyard.ports.event_bus import EventBus
from tests.contract import test_command_service as base
from tests.contract.test_command_service import (
    RecordingHandler,
    make_config,
    rid,
    serving,
    settled,
    wait_entries,
    wait_reply,
)

pytestmark = pytest.mark.anyio

bus = base.bus  # the same parametrized fixture: memory and real Redis


class ForwardingHandler:
    """Forwards every command to ``target``; records what it saw."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.seen: list[AnyCommand] = []

    async def handle(self, command: AnyCommand) -> JsonValue | Forward:
        self.seen.append(command)
        return Forward(self.target)


def owner_stream() -> str:
    return f"owner:{uuid.uuid4().hex[:12]}"


async def test_forwarded_entry_is_republished_unchanged_acked_and_not_answered(
    bus: EventBus,
) -> None:
    config, target = make_config(), owner_stream()
    handler = ForwardingHandler(target)
    command = GetStatus(request_id=rid(), worker_id="w1")
    # Fields the service does not know travel along untouched.
    fields = command_fields(command) | {"trace": "t-1"}
    async with serving(bus, handler, config):
        await bus.publish(config.stream, fields)
        (entry,) = await wait_entries(bus, target)
        await settled(bus, config)
    assert entry.fields == fields | {FORWARDED_FIELD: "1"}
    assert [c.request_id for c in handler.seen] == [command.request_id]
    # The source is done (ACKed) and never replies: the target does.
    assert await bus.pending_count(config.stream, config.group) == 0
    assert await bus.length(command.reply_stream) == 0


async def test_the_target_manager_answers_a_forwarded_command(bus: EventBus) -> None:
    source, target = make_config(), make_config(stream=owner_stream())
    forwarder, owner = ForwardingHandler(target.stream), RecordingHandler()
    command = GetStatus(request_id=rid(), worker_id="w1")
    async with serving(bus, forwarder, source), serving(bus, owner, target):
        await bus.publish(source.stream, command_fields(command))
        reply = await wait_reply(bus, command.request_id)
        await settled(bus, source)
        await settled(bus, target)
    assert reply.ok
    assert reply.result == {"type": "status", "request_id": command.request_id}
    assert owner.ids() == [command.request_id]
    assert await bus.length(command.reply_stream) == 1


async def test_a_command_forwarded_too_often_gets_a_forward_loop_error(bus: EventBus) -> None:
    config = make_config(max_forwards=2)
    handler = ForwardingHandler(config.stream)  # a loop: always back to itself
    command = ListWorkers(request_id=rid())
    async with serving(bus, handler, config):
        await bus.publish(config.stream, command_fields(command))
        reply = await wait_reply(bus, command.request_id)
        await settled(bus, config)
    assert reply.error_code == ForwardLoop.code
    with pytest.raises(ForwardLoop) as caught:
        reply.raise_for_error()
    assert caught.value.fields["forwarded"] == 2
    entries = await bus.read(config.stream)
    assert [e.fields.get(FORWARDED_FIELD) for e in entries] == [None, "1", "2"]
    assert [c.request_id for c in handler.seen] == [command.request_id] * 3
    assert await bus.length(command.reply_stream) == 1


async def test_an_answered_command_is_not_forwarded_again(bus: EventBus) -> None:
    config, target = make_config(), owner_stream()
    handler = ForwardingHandler(target)
    command = ListWorkers(request_id=rid())
    await bus.ensure_group(config.stream, config.group)
    await bus.publish(config.stream, command_fields(command) | {FORWARDED_FIELD: "1"})
    # A consumer that read it, got it answered by the target, and died before the ACK.
    await bus.read_group(config.stream, config.group, "dead", count=10)
    await bus.publish(command.reply_stream, Reply.success(command.request_id, []).to_fields())
    async with serving(bus, handler, config):
        await settled(bus, config)
    assert handler.seen == []  # the reply check comes before the handler
    assert await bus.length(target) == 0
    assert await bus.length(command.reply_stream) == 1


@pytest.mark.parametrize(
    ("value", "count"), [(None, 0), ("2", 2), ("-5", 0), ("many", 0), ("9" * 5000, 0)]
)
def test_forward_count_reads_the_counter_and_ignores_garbage(value: str | None, count: int) -> None:
    fields = {"command": "{}"} | ({} if value is None else {FORWARDED_FIELD: value})
    assert forward_count(fields) == count
