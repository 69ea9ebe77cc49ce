"""A command whose handler fails because a store is down waits for the store (retried with
back-off) instead of being answered ``service_unavailable`` at once; only an outage longer
than ``store_outage_s`` is answered so. In-memory bus, real (short) time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from pydantic import JsonValue

from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.app.command_retry import is_store_outage
from codeyard.app.command_service import CommandHandler, CommandService, CommandServiceConfig
from codeyard.domain.commands import AnyCommand, GetStatus, Reply, command_fields
from codeyard.domain.errors import (
    CodeyardError,
    InvalidInput,
    QuotaExceeded,
    ReplyTimeout,
    ServiceUnavailable,
    WorkerNotFound,
    error_from_dict,
)
from codeyard.domain.streams import response_stream

pytestmark = pytest.mark.anyio

POSTGRES_DOWN = ServiceUnavailable("postgres unavailable during get", service="postgres")


class FlakyHandler:
    """Raises ``errors[worker_id]`` for the first ``failures`` calls per request, then
    answers; counts the calls per request."""

    def __init__(self, failures: int, errors: dict[str, CodeyardError] | None = None) -> None:
        self.failures = failures
        self.errors = errors or {}
        self.calls: dict[str, int] = {}
        self.called = anyio.Event()  # set, and replaced, at every call

    async def handle(self, command: AnyCommand) -> JsonValue:
        n = self.calls[command.request_id] = self.calls.get(command.request_id, 0) + 1
        self.called.set()
        self.called = anyio.Event()
        worker_id = getattr(command, "worker_id", "")
        error = self.errors.get(worker_id)
        if error is not None and n <= self.failures:
            raise error
        return {"worker_id": worker_id}

    async def until(self, check: Callable[[], bool]) -> None:
        with anyio.fail_after(10):
            while not check():
                await self.called.wait()


def config(**overrides: Any) -> CommandServiceConfig:
    tag = uuid.uuid4().hex[:8]
    base: dict[str, Any] = {
        "stream": f"cmds:{tag}",
        "dead_letter_stream": f"dead:{tag}",
        "consumer": f"svc-{tag}",
        "block_s": 0.05,
        "min_idle_s": 60.0,
        "reclaim_interval_s": 0.05,
        "retry_s": 0.02,
        "store_outage_s": 5.0,
    }
    return CommandServiceConfig(**(base | overrides))


@asynccontextmanager
async def serving(
    handler: CommandHandler, cfg: CommandServiceConfig
) -> AsyncIterator[InMemoryEventBus]:
    bus = InMemoryEventBus()
    service = CommandService(bus, handler, cfg)
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        yield bus
        tg.cancel_scope.cancel()


async def send(bus: InMemoryEventBus, cfg: CommandServiceConfig, worker_id: str) -> str:
    request_id = f"r-{uuid.uuid4().hex}"
    command = GetStatus(request_id=request_id, worker_id=worker_id)
    await bus.publish(cfg.stream, command_fields(command))
    return request_id


async def replies(bus: InMemoryEventBus, request_id: str, *, at_least: int = 1) -> list[Reply]:
    with anyio.fail_after(10):
        while True:
            entries = await bus.read(response_stream(request_id), after="0-0", count=10)
            if len(entries) >= at_least:
                return [Reply.from_fields(e.fields) for e in entries]
            await anyio.sleep(0.01)


async def test_a_command_waits_out_a_short_store_outage_and_succeeds() -> None:
    handler, cfg = FlakyHandler(3, {"w-pg": POSTGRES_DOWN}), config()
    async with serving(handler, cfg) as bus:
        request_id = await send(bus, cfg, "w-pg")
        (reply,) = await replies(bus, request_id)
        await anyio.sleep(0.1)  # no second reply comes
        assert len(await replies(bus, request_id)) == 1
    assert reply.ok, reply
    assert handler.calls[request_id] == 4  # three outages, then the answer


async def test_an_outage_longer_than_store_outage_s_gets_one_typed_reply() -> None:
    handler = FlakyHandler(10**6, {"w-pg": POSTGRES_DOWN})
    cfg = config(store_outage_s=0.3)
    async with serving(handler, cfg) as bus:
        started = anyio.current_time()
        request_id = await send(bus, cfg, "w-pg")
        (reply,) = await replies(bus, request_id)
        took = anyio.current_time() - started
        await anyio.sleep(0.2)
        assert len(await replies(bus, request_id)) == 1
        # The service keeps serving: a command that needs no store is answered.
        (later,) = await replies(bus, await send(bus, cfg, "w-fine"))
    assert reply.error_code == "service_unavailable"
    assert reply.error is not None
    fields = error_from_dict(reply.error).fields
    waited = fields["waited_s"]
    assert 0.3 <= waited < 0.6  # the last attempt is made at the deadline
    assert fields["service"] == "postgres"
    assert 0.3 <= took < 2.0
    assert handler.calls[request_id] >= 3  # retried meanwhile
    assert later.ok


@pytest.mark.parametrize(
    "error",
    [
        InvalidInput("bad"),
        QuotaExceeded("full", max_workers=1),
        WorkerNotFound("no such worker", worker_id="w-x"),
        ServiceUnavailable("engine down", service="docker"),
        ServiceUnavailable("no service named"),
    ],
    ids=["invalid", "quota", "not-found", "docker", "no-service"],
)
async def test_other_errors_are_answered_at_once(error: CodeyardError) -> None:
    handler = FlakyHandler(10**6, {"w-x": error})
    cfg = config()
    async with serving(handler, cfg) as bus:
        request_id = await send(bus, cfg, "w-x")
        (reply,) = await replies(bus, request_id)
    assert reply.error_code == error.code
    assert handler.calls[request_id] == 1


async def test_store_outage_s_zero_answers_at_once() -> None:
    handler, cfg = FlakyHandler(10**6, {"w-pg": POSTGRES_DOWN}), config(store_outage_s=0)
    async with serving(handler, cfg) as bus:
        request_id = await send(bus, cfg, "w-pg")
        (reply,) = await replies(bus, request_id)
    assert reply.error_code == "service_unavailable"
    assert reply.error is not None
    fields = error_from_dict(reply.error).fields
    assert fields["waited_s"] == 0
    assert handler.calls[request_id] == 1


async def test_the_wait_never_passes_half_the_takeover_time() -> None:
    handler = FlakyHandler(10**6, {"w-pg": POSTGRES_DOWN})
    cfg = config(store_outage_s=60, min_idle_s=0.6)  # takeover after 0.6 s: answer by 0.3 s
    async with serving(handler, cfg) as bus:
        started = anyio.current_time()
        request_id = await send(bus, cfg, "w-pg")
        (reply,) = await replies(bus, request_id)
        took = anyio.current_time() - started
    assert reply.error_code == "service_unavailable"
    assert took < 0.6
    assert handler.calls[request_id] >= 2


async def test_cancelling_the_service_while_a_command_waits_leaves_it_pending() -> None:
    handler, cfg = FlakyHandler(10**6, {"w-pg": POSTGRES_DOWN}), config()
    bus = InMemoryEventBus()
    service = CommandService(bus, handler, cfg)
    with anyio.move_on_after(2) as timeout:
        async with anyio.create_task_group() as tg:
            await tg.start(service.run)
            request_id = await send(bus, cfg, "w-pg")
            await handler.until(lambda: handler.calls.get(request_id, 0) >= 2)  # waiting
            tg.cancel_scope.cancel()
    assert not timeout.cancelled_caught
    assert await bus.length(response_stream(request_id)) == 0
    assert await bus.pending_count(cfg.stream, cfg.group) == 1  # not lost: reclaimed later


async def test_waiting_commands_hold_their_slots_but_only_until_answered() -> None:
    """With every slot held by commands waiting for the store, a command that needs no
    store waits for a slot, but only until the waiting ones are answered."""
    handler = FlakyHandler(10**6, {"w-pg": POSTGRES_DOWN})
    cfg = config(concurrency=2, store_outage_s=0.4)
    async with serving(handler, cfg) as bus:
        stuck = [await send(bus, cfg, "w-pg") for _ in range(2)]
        await handler.until(lambda: all(handler.calls.get(r) for r in stuck))
        started = anyio.current_time()
        (fine,) = await replies(bus, await send(bus, cfg, "w-fine"))
        took = anyio.current_time() - started
        for request_id in stuck:
            (reply,) = await replies(bus, request_id)
            assert reply.error_code == "service_unavailable"
    assert fine.ok
    assert 0.1 < took < 2.0


def test_only_store_services_count_as_an_outage() -> None:
    assert is_store_outage(POSTGRES_DOWN)
    assert is_store_outage(ServiceUnavailable("redis down", service="redis"))
    assert not is_store_outage(ServiceUnavailable("engine down", service="docker"))
    assert not is_store_outage(ReplyTimeout("no reply", service="postgres"))
    assert not is_store_outage(InvalidInput("bad", service="postgres"))
    assert not is_store_outage(ValueError("postgres"))
