"""CodeyardClient on the in-memory event bus against a real CommandService (fake handler)."""

from __future__ import annotations

import anyio
import pytest
from structlog.testing import capture_logs

from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.client import CodeyardClient, WorkerEvent
from codeyard.domain.commands import (
    CreateWorker,
    GetStatus,
    ListWorkers,
    SendPrompt,
)
from codeyard.domain.errors import (
    InternalError,
    InvalidName,
    InvalidRequest,
    QuotaExceeded,
    ReplyTimeout,
    ServiceUnavailable,
    WorkerNotFound,
)
from codeyard.domain.streams import (
    COMMANDS_STREAM,
    response_stream,
    worker_input_stream,
    worker_output_stream,
)
from codeyard.domain.worker import WorkerSpec, WorkerStatus
from codeyard.domain.worker_io import EVENT_FIELD, WorkerInput, parse_worker_message
from tests.unit.client_support import FakeManager, manager, result_event

pytestmark = pytest.mark.anyio


@pytest.fixture
def bus() -> InMemoryEventBus:
    return InMemoryEventBus()


def client_on(bus: InMemoryEventBus, reply_timeout_s: float = 5.0) -> CodeyardClient:
    return CodeyardClient(bus, reply_timeout_s=reply_timeout_s)


# --- control plane ---------------------------------------------------------------------------


async def test_every_command_type_round_trips(bus: InMemoryEventBus) -> None:
    handler, client = FakeManager(bus), client_on(bus)
    async with manager(bus, handler):
        created = await client.create(WorkerSpec(labels={"team": "a"}), worker_id="w-9")
        assert (created.worker_id, created.status, created.prompt_request_id) == (
            "w-9",
            WorkerStatus.STARTING,
            None,
        )
        assert (await client.status("w-9")).worker_id == "w-9"
        assert [w.worker_id for w in await client.list()] == ["w-1", "w-2"]
        assert await client.logs("w-9", tail=7) == "tail=7"
        sent = await client.send("w-9", "hello", request_id="r-1", via_manager=True)
        assert (sent.request_id, sent.entry_id) == ("r-1", "1-0")
        assert (await client.delete("w-9")).status is WorkerStatus.STOPPED
    kinds = [c.type for c in handler.seen]
    assert kinds == ["create", "status", "list", "logs", "send", "delete"]
    create = handler.seen[0]
    assert isinstance(create, CreateWorker)
    assert create.spec.labels == {"team": "a"}
    send = handler.seen[4]
    assert isinstance(send, SendPrompt)
    assert send.prompt == "hello"
    assert handler.deleted == ["w-9"]


async def test_request_id_is_used_and_reply_stream_deleted(bus: InMemoryEventBus) -> None:
    handler, client = FakeManager(bus), client_on(bus)
    async with manager(bus, handler):
        await client.create(request_id="req-1", prompt="go")
        other = await client.create()
    assert handler.seen[0].request_id == "req-1"
    assert len(other.worker_id) > 0
    assert handler.seen[1].request_id != "req-1"
    for command in handler.seen:
        assert await bus.length(response_stream(command.request_id)) == 0


async def test_own_reply_stream_is_kept(bus: InMemoryEventBus) -> None:
    handler, client = FakeManager(bus), client_on(bus)
    await bus.publish("my:replies", {"noise": "not a reply"})  # shared streams hold others
    async with manager(bus, handler):
        result = await client.call(
            GetStatus(request_id="r-own", worker_id="w-1", reply_to="my:replies")
        )
    assert isinstance(result, dict)
    assert result["worker_id"] == "w-1"
    assert await bus.length("my:replies") == 2


async def test_error_replies_are_raised_as_their_class(bus: InMemoryEventBus) -> None:
    handler, client = FakeManager(bus), client_on(bus)
    async with manager(bus, handler):
        with pytest.raises(WorkerNotFound) as not_found:
            await client.status("missing")
        with pytest.raises(InternalError):
            await client.delete("boom")
        with pytest.raises(QuotaExceeded) as quota:
            await client.create(WorkerSpec(labels={"quota": "full"}))
    assert not_found.value.fields == {"worker_id": "missing"}
    assert quota.value.fields == {"limit": 1}


async def test_invalid_arguments_fail_before_publishing(bus: InMemoryEventBus) -> None:
    client = client_on(bus)
    with pytest.raises(InvalidName):
        await client.status("bad id")
    with pytest.raises(InvalidName):
        await client.send("bad/id", "hi")
    with pytest.raises(InvalidRequest):
        await client.send("w-1", "   ")
    assert await bus.length(COMMANDS_STREAM) == 0


async def test_missing_reply_times_out(bus: InMemoryEventBus) -> None:
    client = client_on(bus, reply_timeout_s=0.2)
    with anyio.fail_after(5):
        with pytest.raises(ReplyTimeout) as timeout:
            await client.call(ListWorkers(request_id="r-lost"))
    assert isinstance(timeout.value, ServiceUnavailable)
    assert timeout.value.fields["service"] == "worker-manager"
    assert timeout.value.fields["request_id"] == "r-lost"
    assert await bus.length(COMMANDS_STREAM) == 1  # it was sent; nobody answered
    with pytest.raises(ReplyTimeout):
        await client.status("w-1")  # the client's default
    with pytest.raises(ReplyTimeout):
        await client.create(timeout_s=0.05)  # a per-call override


# --- data plane ------------------------------------------------------------------------------


async def test_send_writes_a_worker_input(bus: InMemoryEventBus) -> None:
    client = client_on(bus)
    sent = await client.send("w-1", "fix it", request_id="r-5", model="m", timeout_s=9, max_turns=2)
    (entry,) = await bus.read(worker_input_stream("w-1"))
    assert entry.id == sent.entry_id
    assert sent.request_id == "r-5"
    message = parse_worker_message(entry.fields)
    assert message == WorkerInput(
        prompt="fix it", request_id="r-5", model="m", timeout_s=9, max_turns=2
    )
    generated = await client.send("w-1", "again")
    (second,) = await bus.read(worker_input_stream("w-1"), after=entry.id)
    assert isinstance(msg := parse_worker_message(second.fields), WorkerInput)
    assert msg.request_id == generated.request_id


async def collect(client: CodeyardClient, n: int, after: str = "0-0") -> list[WorkerEvent]:
    found: list[WorkerEvent] = []
    with anyio.fail_after(5):
        async for item in client.events("w-1", after=after, block_s=0.05):
            found.append(item)
            if len(found) == n:
                break
    return found


async def test_events_skip_garbage_and_resume_from_any_entry(bus: InMemoryEventBus) -> None:
    client, out = client_on(bus), worker_output_stream("w-1")
    first = await bus.publish(out, result_event("w-1", "r-1", "one"))
    await bus.publish(out, {EVENT_FIELD: "{not json"})
    await bus.publish(out, {"other": "field"})
    await bus.publish(out, {EVENT_FIELD: '{"seq": -1}'})
    third = await bus.publish(out, result_event("w-1", "r-3", "three"))
    with capture_logs() as logs:
        events = await collect(client, 2)
    assert [e.entry_id for e in events] == [first, third]
    assert [e.event.run_id for e in events] == ["r-1", "r-3"]
    skipped = [entry for entry in logs if entry["event"] == "skipping a malformed output entry"]
    assert len(skipped) == 3
    assert all(e["log_level"] == "warning" for e in skipped)
    resumed = await collect(client, 1, after=first)
    assert [e.entry_id for e in resumed] == [third]


async def test_events_wait_for_new_entries(bus: InMemoryEventBus) -> None:
    client = client_on(bus)
    async with anyio.create_task_group() as tg:
        tg.start_soon(bus.publish, worker_output_stream("w-1"), result_event("w-1", "r", "late"))
        (event,) = await collect(client, 1)
    assert event.result is not None
    assert event.result.text == "late"


async def test_wait_result_matches_the_request_id(bus: InMemoryEventBus) -> None:
    client, out = client_on(bus), worker_output_stream("w-1")
    await bus.publish(out, result_event("w-1", "r-other", "other run"))
    await bus.publish(out, result_event("w-1", None, "wrapper noise", reason="stopped"))
    await bus.publish(out, result_event("w-1", "r-mine", "mine"))
    mine = await client.wait_result("w-1", request_id="r-mine", timeout_s=5)
    assert mine.text == "mine"
    anything = await client.wait_result("w-1", timeout_s=5)
    assert anything.text == "other run"


async def test_wait_result_accepts_a_dead_container(bus: InMemoryEventBus) -> None:
    client, out = client_on(bus), worker_output_stream("w-1")
    start = await bus.publish(out, result_event("w-1", "r-old", "old"))
    await bus.publish(out, result_event("w-1", None, "died", reason="container_exited"))
    died = await client.wait_result("w-1", request_id="r-new", after=start, timeout_s=5)
    assert died.terminal_reason == "container_exited"
    assert not died.ok


async def test_wait_result_times_out(bus: InMemoryEventBus) -> None:
    client = client_on(bus)
    await bus.publish(worker_output_stream("w-1"), result_event("w-1", "r-other", "x"))
    with anyio.fail_after(5), pytest.raises(TimeoutError):
        await client.wait_result("w-1", request_id="r-never", timeout_s=0.2)


# --- run -------------------------------------------------------------------------------------


async def test_run_creates_waits_and_deletes(bus: InMemoryEventBus) -> None:
    handler, client = FakeManager(bus), client_on(bus)
    async with manager(bus, handler):
        result = await client.run(WorkerSpec(), "build it", timeout_s=5)
    assert result.text == "did: build it"
    create = handler.seen[0]
    assert isinstance(create, CreateWorker)
    assert create.prompt == "build it"
    assert handler.deleted == [create.worker_id]


async def test_run_deletes_even_when_waiting_fails(bus: InMemoryEventBus) -> None:
    handler, client = FakeManager(bus, silent_workers=True), client_on(bus)
    async with manager(bus, handler):
        with pytest.raises(TimeoutError):
            await client.run(None, "never answered", timeout_s=0.3)
        with anyio.move_on_after(0.3):  # cancellation: the shielded delete still runs
            await client.run(None, "cancelled")
    assert [c.type for c in handler.seen] == ["create", "delete", "create", "delete"]
    created = [c.worker_id for c in handler.seen if isinstance(c, CreateWorker)]
    assert handler.deleted == created
    assert None not in created


async def test_run_does_not_delete_after_a_refused_create(bus: InMemoryEventBus) -> None:
    handler, client = FakeManager(bus), client_on(bus)
    async with manager(bus, handler):
        with pytest.raises(QuotaExceeded):
            await client.run(WorkerSpec(labels={"quota": "full"}), "x", timeout_s=5)
    assert [c.type for c in handler.seen] == ["create"]
