"""A slow command is kept alive, not taken over: CommandService against both EventBus
adapters (the in-memory model and real Redis), two services on one group standing for two
managers. Helpers and the ``bus`` fixture come from ``test_command_service``.

Found by the fault soak: a create slower than ``max_deliveries x min_idle_s`` was claimed
again and again by the reclaim loops (each claim counting a delivery) and dead-lettered
``poison_command`` while it was progressing.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest
from anyio.abc import TaskStatus
from pydantic import JsonValue

from codeyard.app.command_service import CommandHandler, CommandService, CommandServiceConfig
from codeyard.domain.commands import AnyCommand, GetStatus
from codeyard.domain.streams import PendingPage
from codeyard.ports.event_bus import EventBus
from tests.contract import test_command_service as base
from tests.contract.test_command_service import (
    WAIT_S,
    make_config,
    rid,
    send,
    settled,
    wait_reply,
)

pytestmark = pytest.mark.anyio

bus = base.bus  # the same parametrized fixture: memory and real Redis

MIN_IDLE_S = 0.3


class SlowHandler:
    """Takes ``run_s`` for every command; ``started`` is set once one is running."""

    def __init__(self, run_s: float) -> None:
        self.run_s = run_s
        self.seen: list[str] = []
        self.finished: list[str] = []
        self.started = anyio.Event()

    async def handle(self, command: AnyCommand) -> JsonValue:
        self.seen.append(command.request_id)
        self.started.set()
        await anyio.sleep(self.run_s)
        self.finished.append(command.request_id)
        return {"request_id": command.request_id}


class ClaimRecordingBus:
    """Delegates to ``inner``; records every entry any ``claim_stale`` call took over, with
    its delivery count (each one is a delivery counted on the server)."""

    def __init__(self, inner: EventBus) -> None:
        self._inner = inner
        self.claimed: list[tuple[str, str, int]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def claim_stale(self, stream: str, group: str, consumer: str, **kw: Any) -> PendingPage:
        page = await self._inner.claim_stale(stream, group, consumer, **kw)
        self.claimed += [(consumer, m.id, m.deliveries) for m in page.messages]
        return page


def start_in(
    scope: anyio.CancelScope, bus: Any, handler: CommandHandler, config: CommandServiceConfig
) -> Callable[..., Coroutine[Any, Any, None]]:
    """A task for ``tg.start`` serving until ``scope`` is cancelled (a manager that dies)."""

    async def serve(*, task_status: TaskStatus[None]) -> None:
        with scope:
            await CommandService(bus, handler, config).run(task_status=task_status)

    return serve


def two_managers() -> tuple[CommandServiceConfig, CommandServiceConfig]:
    # max_deliveries=2: a single takeover of the slow entry would make it poison.
    first = make_config(min_idle_s=MIN_IDLE_S, max_deliveries=2)
    second = make_config(
        stream=first.stream,
        dead_letter_stream=first.dead_letter_stream,
        consumer=f"{first.consumer}-other",
        min_idle_s=MIN_IDLE_S,
        max_deliveries=2,
    )
    return first, second


async def test_a_slow_command_is_answered_once_and_never_taken_over(bus: EventBus) -> None:
    config, other = two_managers()
    recording = ClaimRecordingBus(bus)
    slow, idle = SlowHandler(5 * MIN_IDLE_S), SlowHandler(0)
    command = GetStatus(request_id=rid(), worker_id="w1")
    async with anyio.create_task_group() as tg:
        await tg.start(start_in(anyio.CancelScope(), recording, slow, config))
        entry_id = await send(bus, config, command)
        with anyio.fail_after(WAIT_S):
            await slow.started.wait()
        # The other manager comes up once the first one holds the entry; both reclaim
        # loops pass every 50 ms over an entry pending five times min_idle_s.
        await tg.start(start_in(anyio.CancelScope(), recording, idle, other))
        reply = await wait_reply(bus, command.request_id)
        await settled(bus, config)
        await anyio.sleep(2 * MIN_IDLE_S)  # later passes find nothing either
        tg.cancel_scope.cancel()
    assert reply.ok
    assert (slow.seen, slow.finished, idle.seen) == ([command.request_id],) * 2 + ([],)
    assert await bus.length(command.reply_stream) == 1
    assert await bus.length(config.dead_letter_stream) == 0
    # Never claimed by anyone: its delivery count stayed 1.
    assert [c for c in recording.claimed if c[1] == entry_id] == []


async def test_a_dead_managers_slow_command_is_taken_over_after_min_idle_s(
    bus: EventBus,
) -> None:
    config, other = two_managers()
    recording = ClaimRecordingBus(bus)
    slow, fast = SlowHandler(3600), SlowHandler(0)
    command = GetStatus(request_id=rid(), worker_id="w1")
    first_scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        await tg.start(start_in(first_scope, recording, slow, config))
        entry_id = await send(bus, config, command)
        with anyio.fail_after(WAIT_S):
            await slow.started.wait()
        await tg.start(start_in(anyio.CancelScope(), recording, fast, other))
        await anyio.sleep(3 * MIN_IDLE_S)
        assert fast.seen == []  # alive and slow: not taken over
        first_scope.cancel()  # the first manager dies mid-command
        died_at = anyio.current_time()
        reply = await wait_reply(bus, command.request_id)
        took_s = anyio.current_time() - died_at
        await settled(bus, config)
        tg.cancel_scope.cancel()
    assert reply.ok
    assert (slow.finished, fast.seen) == ([], [command.request_id])
    assert await bus.length(command.reply_stream) == 1
    assert await bus.length(config.dead_letter_stream) == 0
    # Taken over once, by the survivor: the second delivery (the keep-alives counted none).
    assert [c for c in recording.claimed if c[1] == entry_id] == [(other.consumer, entry_id, 2)]
    # Not before the last keep-alive aged min_idle_s (at most min_idle_s / 3 before death).
    assert took_s >= MIN_IDLE_S * 2 / 3 - 0.05
