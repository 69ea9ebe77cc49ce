"""CommandService against both EventBus adapters: the in-memory model and real Redis.

Every test uses its own command and dead-letter stream names, so hypothesis examples
sharing one bus do not see each other's entries. Idle times really elapse (a few hundred
milliseconds): the memory bus runs on the system clock here, like Redis.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import JsonValue

from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.app.command_service import CommandHandler, CommandService, CommandServiceConfig
from codeyard.domain.commands import (
    COMMAND_FIELD,
    AnyCommand,
    DeleteWorker,
    GetLogs,
    GetStatus,
    ListWorkers,
    Reply,
    SendPrompt,
    command_fields,
)
from codeyard.domain.errors import InvalidInput, WorkerNotFound
from codeyard.domain.streams import StreamMessage, response_stream
from codeyard.ports.event_bus import EventBus

pytestmark = pytest.mark.anyio

WAIT_S = 10.0


class RecordingHandler:
    """Answers with what it saw; ``missing`` workers are not found, ``boom`` is a bug."""

    def __init__(self) -> None:
        self.seen: list[AnyCommand] = []
        self.block = anyio.Event()
        self.blocked = anyio.Event()

    async def handle(self, command: AnyCommand) -> JsonValue:
        self.seen.append(command)
        worker_id = getattr(command, "worker_id", None)
        if worker_id == "missing":
            raise WorkerNotFound("no such worker", worker_id=worker_id)
        if worker_id == "boom":
            raise KeyError("a bug")
        if worker_id == "slow":
            self.blocked.set()
            await self.block.wait()
        return {"type": command.type, "request_id": command.request_id}

    def ids(self) -> list[str]:
        return [c.request_id for c in self.seen]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[EventBus]:
    if request.param == "memory":
        yield InMemoryEventBus()
        return
    redis_url: str = request.getfixturevalue("redis_db")
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield RedisEventBus(client)
    finally:
        await client.aclose()


def make_config(**overrides: Any) -> CommandServiceConfig:
    tag = uuid.uuid4().hex[:12]
    base: dict[str, Any] = {
        "stream": f"cmds:{tag}",
        "dead_letter_stream": f"dead:{tag}",
        "consumer": f"svc-{tag}",
        "block_s": 0.1,
        "min_idle_s": 0.3,
        "reclaim_interval_s": 0.05,
        "max_deliveries": 3,
    }
    return CommandServiceConfig(**(base | overrides))


@asynccontextmanager
async def serving(
    bus: EventBus, handler: CommandHandler, config: CommandServiceConfig
) -> AsyncIterator[CommandService]:
    service = CommandService(bus, handler, config)
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        yield service
        tg.cancel_scope.cancel()


async def wait_entries(bus: EventBus, stream: str, n: int = 1) -> list[StreamMessage]:
    """The first ``n`` entries of ``stream``, waiting for them to arrive."""
    found: list[StreamMessage] = []
    with anyio.fail_after(WAIT_S):
        while len(found) < n:
            after = found[-1].id if found else "0-0"
            found += await bus.read(stream, after=after, count=n - len(found), block_s=0.05)
    return found


async def wait_reply(bus: EventBus, request_id: str) -> Reply:
    (entry,) = await wait_entries(bus, response_stream(request_id))
    return Reply.from_fields(entry.fields)


async def settled(bus: EventBus, config: CommandServiceConfig) -> None:
    """Wait until every delivered entry is ACKed (polling: the bus signals no ACKs)."""
    with anyio.fail_after(WAIT_S):
        while True:
            if await bus.pending_count(config.stream, config.group) == 0:
                return
            await anyio.sleep(0.02)


async def send(bus: EventBus, config: CommandServiceConfig, command: AnyCommand) -> str:
    return await bus.publish(config.stream, command_fields(command))


def rid() -> str:
    return f"r-{uuid.uuid4().hex}"


# --- valid commands --------------------------------------------------------------------------


async def test_valid_commands_get_success_replies(bus: EventBus) -> None:
    config, handler = make_config(), RecordingHandler()
    commands: list[AnyCommand] = [
        ListWorkers(request_id=rid()),
        GetStatus(request_id=rid(), worker_id="w1"),
        GetLogs(request_id=rid(), worker_id="w1", tail=3),
        SendPrompt(request_id=rid(), worker_id="w1", prompt="hi"),
        DeleteWorker(request_id=rid(), worker_id="w1"),
    ]
    async with serving(bus, handler, config):
        for command in commands:
            await send(bus, config, command)
        replies = [await wait_reply(bus, c.request_id) for c in commands]
        await settled(bus, config)
    # Handled concurrently: the order between commands is not kept.
    assert sorted(handler.ids()) == sorted(c.request_id for c in commands)
    for command, reply in zip(commands, replies, strict=True):
        assert reply.ok
        assert reply.result == {"type": command.type, "request_id": command.request_id}
    assert await bus.pending_count(config.stream, config.group) == 0


async def test_reply_goes_to_the_named_reply_stream(bus: EventBus) -> None:
    config, handler = make_config(), RecordingHandler()
    command = ListWorkers(request_id=rid(), reply_to=f"client:{uuid.uuid4().hex}")
    async with serving(bus, handler, config):
        await send(bus, config, command)
        (entry,) = await wait_entries(bus, command.reply_stream)
    assert Reply.from_fields(entry.fields).request_id == command.request_id


async def test_handler_errors_become_typed_error_replies(bus: EventBus) -> None:
    config, handler = make_config(), RecordingHandler()
    missing = GetStatus(request_id=rid(), worker_id="missing")
    bug = GetStatus(request_id=rid(), worker_id="boom")
    after = ListWorkers(request_id=rid())
    async with serving(bus, handler, config):
        for command in (missing, bug, after):
            await send(bus, config, command)
        not_found, internal, ok = [
            await wait_reply(bus, c.request_id) for c in (missing, bug, after)
        ]
        await settled(bus, config)
    assert not_found.error_code == "worker_not_found"
    with pytest.raises(WorkerNotFound):
        not_found.raise_for_error()
    assert internal.error_code == "internal"
    assert ok.ok
    assert await bus.pending_count(config.stream, config.group) == 0


# --- garbage ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Garbage:
    """An entry to publish; ``request_id`` gets injected when ``answerable``."""

    fields: dict[str, str] | None = None
    doc: dict[str, Any] | None = None

    @property
    def answerable(self) -> bool:
        return self.doc is not None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.text(max_size=8).filter(lambda k: k != "request_id"), inner, max_size=3
        )
    ),
    max_leaves=8,
)
_valid_docs: list[dict[str, Any]] = [
    {"type": "list"},
    {"type": "status", "worker_id": "w1"},
    {"type": "delete", "worker_id": "w1"},
    {"type": "logs", "worker_id": "w1", "tail": 10},
    {"type": "send", "worker_id": "w1", "prompt": "hi"},
    {"type": "create", "spec": {"agent": "claude"}},
]
# Each mutation makes any of the valid documents invalid.
_mutations = st.sampled_from(
    [
        lambda d: d | {"type": "explode"},
        lambda d: {k: v for k, v in d.items() if k != "type"},
        lambda d: d | {"unexpected": 1},
        lambda d: d | {"worker_id": "not a name!"},
        lambda d: d | {"tail": "many"} if d["type"] == "logs" else d | {"type": 7},
        lambda d: d | {"spec": 5} if d["type"] == "create" else d | {"type": None},
        lambda d: d | {"prompt": "  "} if d["type"] == "send" else d | {"type": ["list"]},
        lambda d: d | {"reply_to": "no spaces allowed"},
    ]
)
garbage = st.one_of(
    st.text(max_size=60).map(lambda s: Garbage(fields={COMMAND_FIELD: s})),
    st.binary(max_size=60).map(lambda b: Garbage(fields={COMMAND_FIELD: b.decode("latin-1")})),
    _json.map(lambda v: Garbage(fields={COMMAND_FIELD: json.dumps(v)})),
    st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), min_size=1).map(
        lambda f: Garbage(fields={COMMAND_FIELD + "_": "x", **f})
    ),
    st.sampled_from(_valid_docs).map(lambda d: Garbage(fields={COMMAND_FIELD: json.dumps(d)})),
    st.builds(lambda d, m: Garbage(doc=m(d)), st.sampled_from(_valid_docs), _mutations),
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(entries=st.lists(garbage, min_size=50, max_size=50))
async def test_garbage_gets_error_replies_or_dead_letters_and_the_service_stays_up(
    bus: EventBus, entries: Sequence[Garbage]
) -> None:
    config, handler = make_config(), RecordingHandler()
    await bus.ensure_group(config.stream, config.group)
    answerable: list[str] = []
    dead: list[str] = []
    for item in entries:
        if item.doc is not None:
            request_id = rid()
            answerable.append(request_id)
            await bus.publish(
                config.stream, {COMMAND_FIELD: json.dumps(item.doc | {"request_id": request_id})}
            )
        else:
            assert item.fields is not None
            dead.append(await bus.publish(config.stream, item.fields))
    valid = ListWorkers(request_id=rid())
    await send(bus, config, valid)
    async with serving(bus, handler, config):
        assert (await wait_reply(bus, valid.request_id)).ok
        await settled(bus, config)
    for request_id in answerable:
        reply = await wait_reply(bus, request_id)
        assert (reply.request_id, reply.error_code) == (request_id, "invalid_command")
    letters = await wait_entries(bus, config.dead_letter_stream, len(dead))
    assert sorted(entry.fields["id"] for entry in letters) == sorted(dead)
    assert handler.ids() == [valid.request_id]
    assert await bus.pending_count(config.stream, config.group) == 0


# --- crashes, redelivery, poison ---------------------------------------------------------------


async def test_entry_left_by_a_dead_consumer_is_reclaimed_and_handled_once(bus: EventBus) -> None:
    config, handler = make_config(), RecordingHandler()
    await bus.ensure_group(config.stream, config.group)
    command = GetStatus(request_id=rid(), worker_id="w1")
    await send(bus, config, command)
    # A consumer that read the entry and died before ACKing it.
    assert len(await bus.read_group(config.stream, config.group, "dead", count=10)) == 1
    async with serving(bus, handler, config):
        reply = await wait_reply(bus, command.request_id)
        await settled(bus, config)
        await anyio.sleep(2 * config.min_idle_s)  # further reclaim passes must not re-run it
    assert reply.ok
    assert handler.ids() == [command.request_id]
    assert await bus.pending_count(config.stream, config.group) == 0
    assert await bus.length(command.reply_stream) == 1


async def test_a_command_answered_before_its_ack_was_lost_is_not_run_again(bus: EventBus) -> None:
    config, handler = make_config(), RecordingHandler()
    await bus.ensure_group(config.stream, config.group)
    command = DeleteWorker(request_id=rid(), worker_id="w1")
    await send(bus, config, command)
    await bus.read_group(config.stream, config.group, "dead", count=10)
    # The dead consumer got as far as the reply, not the ACK.
    await bus.publish(command.reply_stream, Reply.success(command.request_id, "done").to_fields())
    async with serving(bus, handler, config):
        await settled(bus, config)
    assert handler.seen == []
    assert await bus.length(command.reply_stream) == 1


async def test_poison_message_goes_to_the_dead_letter_stream(bus: EventBus) -> None:
    config, handler = make_config(max_deliveries=2), RecordingHandler()
    await bus.ensure_group(config.stream, config.group)
    command = ListWorkers(request_id=rid())
    entry_id = await send(bus, config, command)
    await bus.read_group(config.stream, config.group, "crashed-1", count=10)
    page = await bus.claim_stale(config.stream, config.group, "crashed-2", min_idle_s=0)
    assert [m.deliveries for m in page.messages] == [2]
    async with serving(bus, handler, config):
        (letter,) = await wait_entries(bus, config.dead_letter_stream)
        reply = await wait_reply(bus, command.request_id)
        await settled(bus, config)
    assert letter.fields["id"] == entry_id
    assert "delivered 3 times" in letter.fields["reason"]
    assert json.loads(letter.fields["entry"]) == command_fields(command)
    assert reply.error_code == "poison_command"
    assert handler.seen == []
    assert await bus.pending_count(config.stream, config.group) == 0


async def test_stopping_mid_command_leaves_it_pending_for_the_next_service(bus: EventBus) -> None:
    config = make_config()
    first, second = RecordingHandler(), RecordingHandler()
    command = GetStatus(request_id=rid(), worker_id="slow")
    async with serving(bus, first, config):
        await send(bus, config, command)
        with anyio.fail_after(WAIT_S):
            await first.blocked.wait()
    assert await bus.pending_count(config.stream, config.group) == 1
    assert await bus.length(command.reply_stream) == 0
    second.block.set()
    async with serving(bus, second, make_config(stream=config.stream, consumer="next")):
        reply = await wait_reply(bus, command.request_id)
        await settled(bus, config)
    assert reply.ok
    assert second.ids() == [command.request_id]


async def test_two_services_on_one_stream_handle_every_command_once(bus: EventBus) -> None:
    config = make_config()
    handlers = RecordingHandler(), RecordingHandler()
    commands = [GetStatus(request_id=rid(), worker_id=f"w{i}") for i in range(60)]
    other = make_config(stream=config.stream, consumer="other", batch=3)
    async with serving(bus, handlers[0], config), serving(bus, handlers[1], other):
        for command in commands:
            await send(bus, config, command)
        replies = [await wait_reply(bus, c.request_id) for c in commands]
        await settled(bus, config)
    assert all(reply.ok for reply in replies)
    handled = handlers[0].ids() + handlers[1].ids()
    assert sorted(handled) == sorted(c.request_id for c in commands)
    for command in commands:
        assert await bus.length(command.reply_stream) == 1


async def test_service_recreates_a_deleted_command_stream(bus: EventBus) -> None:
    config, handler = make_config(), RecordingHandler()
    command = ListWorkers(request_id=rid())
    async with serving(bus, handler, config):
        await bus.delete_stream(config.stream)
        await anyio.sleep(0.2)  # let both loops hit the missing group and recover
        await send(bus, config, command)
        reply = await wait_reply(bus, command.request_id)
        await settled(bus, config)
    assert reply.ok
    assert handler.ids() == [command.request_id]


# --- concurrency -------------------------------------------------------------------------------


class GatedHandler:
    """Each command waits for its own gate; records starts, cancellations and the peak
    number of commands running at once."""

    def __init__(self) -> None:
        self.started: defaultdict[str, anyio.Event] = defaultdict(anyio.Event)
        self.gates: defaultdict[str, anyio.Event] = defaultdict(anyio.Event)
        self.running = self.peak = self.cancelled = 0

    async def handle(self, command: AnyCommand) -> JsonValue:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.started[command.request_id].set()
        try:
            await self.gates[command.request_id].wait()
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        return command.request_id

    async def wait_started(self, *commands: AnyCommand) -> None:
        with anyio.fail_after(WAIT_S):
            for command in commands:
                await self.started[command.request_id].wait()


async def test_slow_commands_run_at_the_same_time_and_answer_out_of_order(bus: EventBus) -> None:
    # min_idle_s: the handlers block longer than the default test value.
    config, handler = make_config(min_idle_s=60), GatedHandler()
    first, second = ListWorkers(request_id=rid()), ListWorkers(request_id=rid())
    async with serving(bus, handler, config):
        for command in (first, second):
            await send(bus, config, command)
        await handler.wait_started(first, second)  # both running, neither released
        handler.gates[second.request_id].set()
        later = await wait_reply(bus, second.request_id)
        assert await bus.length(first.reply_stream) == 0
        handler.gates[first.request_id].set()
        earlier = await wait_reply(bus, first.request_id)
        await settled(bus, config)
    assert (earlier.result, later.result) == (first.request_id, second.request_id)
    assert handler.peak == 2


async def test_no_more_than_concurrency_commands_are_taken_at_once(bus: EventBus) -> None:
    config, handler = make_config(concurrency=2, min_idle_s=60), GatedHandler()
    commands = [ListWorkers(request_id=rid()) for _ in range(3)]
    async with serving(bus, handler, config):
        for command in commands:
            await send(bus, config, command)
        await handler.wait_started(*commands[:2])
        # A negative check needs some time to pass: the third must not start meanwhile.
        with anyio.move_on_after(0.3):
            await handler.started[commands[2].request_id].wait()
        assert not handler.started[commands[2].request_id].is_set()
        # Not even read: it stays free for another manager to take.
        assert await bus.pending_count(config.stream, config.group) == 2
        handler.gates[commands[0].request_id].set()
        await handler.wait_started(commands[2])
        for command in commands:
            handler.gates[command.request_id].set()
        replies = [await wait_reply(bus, c.request_id) for c in commands]
        await settled(bus, config)
    assert all(reply.ok for reply in replies)
    assert handler.peak == 2


async def test_stopping_cancels_every_running_command_and_leaves_them_pending(
    bus: EventBus,
) -> None:
    config, first, second = make_config(), GatedHandler(), RecordingHandler()
    commands = [GetStatus(request_id=rid(), worker_id=f"w{i}") for i in range(3)]
    async with serving(bus, first, config):
        for command in commands:
            await send(bus, config, command)
        await first.wait_started(*commands)
    assert first.cancelled == 3
    assert await bus.pending_count(config.stream, config.group) == 3
    for command in commands:
        assert await bus.length(command.reply_stream) == 0
    async with serving(bus, second, make_config(stream=config.stream, consumer="next")):
        replies = [await wait_reply(bus, c.request_id) for c in commands]
        await settled(bus, config)
    assert all(reply.ok for reply in replies)
    assert sorted(second.ids()) == sorted(c.request_id for c in commands)


async def test_config_refuses_no_concurrency() -> None:
    with pytest.raises(InvalidInput):
        CommandServiceConfig(concurrency=0)
    with pytest.raises(InvalidInput):
        CommandServiceConfig(max_forwards=-1)
