"""CodeyardClient over real Redis: ``connect()``, command round trips through a running
CommandService, the data plane streams and ``run()``."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import anyio
import pytest

from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.client import CodeyardClient
from codeyard.domain.commands import CreateWorker
from codeyard.domain.errors import ReplyTimeout, ServiceUnavailable, WorkerNotFound
from codeyard.domain.streams import response_stream, worker_input_stream, worker_output_stream
from codeyard.domain.worker import WorkerSpec, WorkerStatus
from codeyard.domain.worker_io import EVENT_FIELD, WorkerInput, parse_worker_message
from tests.unit.client_support import FakeManager, manager, result_event

pytestmark = pytest.mark.anyio


@pytest.fixture
async def bus(redis_db: str) -> AsyncIterator[RedisEventBus]:
    """A second connection: the fake manager and the checks use it, the client its own."""
    bus = RedisEventBus.from_url(redis_db)
    try:
        yield bus
    finally:
        await bus.aclose()


async def test_commands_round_trip_through_redis(redis_db: str, bus: RedisEventBus) -> None:
    handler = FakeManager(bus)
    async with manager(bus, handler), CodeyardClient.connect(redis_db, reply_timeout_s=10) as c:
        created = await c.create(WorkerSpec(), worker_id="w-r1", request_id="req-r1")
        assert created.worker_id == "w-r1"
        assert (await c.status("w-r1")).status is WorkerStatus.IDLE
        assert len(await c.list()) == 2
        assert await c.logs("w-r1", tail=3) == "tail=3"
        with pytest.raises(WorkerNotFound):
            await c.delete("missing")
        assert (await c.delete("w-r1")).worker_id == "w-r1"
    kinds = [cmd.type for cmd in handler.seen]
    assert kinds == ["create", "status", "list", "logs", "delete", "delete"]
    assert await bus.length(response_stream("req-r1")) == 0


async def test_reply_timeout_over_redis(redis_db: str) -> None:
    async with CodeyardClient.connect(redis_db, reply_timeout_s=0.3) as client:
        with anyio.fail_after(10), pytest.raises(ReplyTimeout):
            await client.status("w-1")


async def test_connect_fails_fast_when_redis_is_down() -> None:
    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with anyio.fail_after(30), pytest.raises(ServiceUnavailable):
        async with CodeyardClient.connect(f"redis://127.0.0.1:{port}/0"):
            pytest.fail("connected to nothing")


async def test_send_events_and_wait_result_over_redis(redis_db: str, bus: RedisEventBus) -> None:
    async with CodeyardClient.connect(redis_db) as client:
        sent = await client.send("w-d", "do it", request_id="r-d", max_turns=3)
        (entry,) = await bus.read(worker_input_stream("w-d"))
        assert entry.id == sent.entry_id
        assert parse_worker_message(entry.fields) == WorkerInput(
            prompt="do it", request_id="r-d", max_turns=3
        )
        out = worker_output_stream("w-d")
        first = await bus.publish(out, result_event("w-d", "r-x", "other"))
        await bus.publish(out, {EVENT_FIELD: "garbage"})
        done: list[str] = []

        async def produce() -> None:  # published while the client is (or will be) blocked
            done.append(await bus.publish(out, result_event("w-d", "r-d", "done")))

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            result = await client.wait_result("w-d", request_id="r-d", after=first, timeout_s=10)
        assert result.text == "done"
        with anyio.fail_after(10):  # resumed after the first entry: the garbage is skipped
            async for item in client.events("w-d", after=first, block_s=0.1):
                assert item.entry_id == done[0]
                assert item.event.run_id == "r-d"
                break


async def test_run_end_to_end_over_redis(redis_db: str, bus: RedisEventBus) -> None:
    handler = FakeManager(bus)
    async with manager(bus, handler), CodeyardClient.connect(redis_db) as client:
        result = await client.run(WorkerSpec(), "ship it", timeout_s=10)
    assert result.text == "did: ship it"
    create = handler.seen[0]
    assert isinstance(create, CreateWorker)
    assert handler.deleted == [create.worker_id]


async def test_run_deletes_after_a_timeout_over_redis(redis_db: str, bus: RedisEventBus) -> None:
    handler = FakeManager(bus, silent_workers=True)
    async with manager(bus, handler), CodeyardClient.connect(redis_db) as client:
        with pytest.raises(TimeoutError):
            await client.run(None, "never", timeout_s=0.5)
    assert [cmd.type for cmd in handler.seen] == ["create", "delete"]
