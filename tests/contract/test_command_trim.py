"""CommandService trimming of ``worker:commands`` against both EventBus adapters.

Answered (ACKed) entries are trimmed off the command stream every ``trim_interval_s``; an
entry a dead consumer left pending is never trimmed and is still reclaimed and answered.
Helpers and the ``bus`` fixture come from ``test_command_service``.
"""

from __future__ import annotations

from collections.abc import Mapping

import anyio
import pytest

from codeyard.app.command_service import CommandService, CommandServiceConfig
from codeyard.domain.commands import GetStatus, ListWorkers
from codeyard.domain.errors import InvalidInput, ServiceUnavailable
from codeyard.ports.event_bus import EventBus
from tests.contract import test_command_service as base
from tests.contract.test_command_service import (
    WAIT_S,
    RecordingHandler,
    make_config,
    rid,
    send,
    serving,
    settled,
    wait_reply,
)

pytestmark = pytest.mark.anyio

bus = base.bus  # the same parametrized fixture: memory and real Redis


async def wait_stream_ids(bus: EventBus, stream: str, expected: list[str]) -> None:
    """Poll until ``stream`` holds exactly ``expected`` (trims are periodic, not signalled)."""
    with anyio.fail_after(WAIT_S):
        while True:
            if [e.id for e in await bus.read(stream, count=100)] == expected:
                return
            await anyio.sleep(0.02)


async def test_answered_commands_are_trimmed_and_a_dead_consumers_entry_survives(
    bus: EventBus,
) -> None:
    # Long enough idle time that the trim is seen before the reclaim takes the entry over.
    quiet = make_config(trim_interval_s=0, min_idle_s=1.0)
    config = make_config(
        stream=quiet.stream, consumer=quiet.consumer, trim_interval_s=0.05, min_idle_s=1.0
    )
    handler = RecordingHandler()
    first = [ListWorkers(request_id=rid()) for _ in range(2)]
    async with serving(bus, handler, quiet):  # trimming disabled
        old = [await send(bus, config, c) for c in first]
        for command in first:
            await wait_reply(bus, command.request_id)
        await settled(bus, config)
    assert [e.id for e in await bus.read(config.stream)] == old

    # A consumer takes an entry and dies; a later command is answered by the service.
    orphan, later = GetStatus(request_id=rid(), worker_id="w1"), ListWorkers(request_id=rid())
    orphan_id = await send(bus, config, orphan)
    (taken,) = await bus.read_group(config.stream, config.group, "dead", count=10)
    assert taken.id == orphan_id
    later_id = await send(bus, config, later)
    async with serving(bus, handler, config):
        await wait_reply(bus, later.request_id)
        # The answered entries before the pending one are trimmed; it and later ones stay.
        await wait_stream_ids(bus, config.stream, [orphan_id, later_id])
        assert orphan.request_id not in handler.ids()
        # The survivor is still reclaimed and answered, then trimmed like the rest.
        reply = await wait_reply(bus, orphan.request_id)
        await settled(bus, config)
        await wait_stream_ids(bus, config.stream, [])
    assert reply.ok
    assert handler.ids().count(orphan.request_id) == 1
    assert await bus.pending_count(config.stream, config.group) == 0


class FailingTrimBus:
    """Delegates to ``inner`` but every trim fails, as when Redis is unreachable."""

    def __init__(self, inner: EventBus) -> None:
        self._inner = inner
        self.trims = 0
        self.failed_three_times = anyio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def trim_acked(self, stream: str, group: str) -> int:
        self.trims += 1
        if self.trims == 3:
            self.failed_three_times.set()
        raise ServiceUnavailable("trim refused", service="redis")


async def test_a_failing_trim_is_not_fatal(bus: EventBus) -> None:
    config, handler = make_config(trim_interval_s=0.01), RecordingHandler()
    failing = FailingTrimBus(bus)
    service = CommandService(failing, handler, config)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        with anyio.fail_after(WAIT_S):  # several reclaim passes ran through failed trims
            await failing.failed_three_times.wait()
        command = ListWorkers(request_id=rid())
        await send(bus, config, command)
        assert (await wait_reply(bus, command.request_id)).ok
        tg.cancel_scope.cancel()


class RecordingBus:
    """Delegates to ``inner``; records the ``maxlen`` of every publish per stream and sets
    ``done`` once ``expected`` entries went to ``watched``."""

    def __init__(self, inner: EventBus, watched: str, expected: int) -> None:
        self._inner = inner
        self._watched, self._expected = watched, expected
        self.maxlens: dict[str, list[int | None]] = {}
        self.done = anyio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def publish(
        self, stream: str, fields: Mapping[str, str], *, maxlen: int | None = None
    ) -> str:
        entry_id = await self._inner.publish(stream, fields, maxlen=maxlen)
        self.maxlens.setdefault(stream, []).append(maxlen)
        if stream == self._watched and len(self.maxlens[stream]) == self._expected:
            self.done.set()
        return entry_id


async def test_dead_letters_are_published_with_the_configured_maxlen(bus: EventBus) -> None:
    config = make_config(dead_letter_maxlen=2)
    recording = RecordingBus(bus, config.dead_letter_stream, 4)
    service = CommandService(recording, RecordingHandler(), config)  # type: ignore[arg-type]
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        garbage = [await bus.publish(config.stream, {"junk": str(i)}) for i in range(4)]
        with anyio.fail_after(WAIT_S):
            await recording.done.wait()
        await settled(bus, config)
        tg.cancel_scope.cancel()
    assert recording.maxlens[config.dead_letter_stream] == [2] * len(garbage)
    letters = await bus.read(config.dead_letter_stream)
    # The memory bus trims exactly; Redis' ``MAXLEN ~`` keeps whole nodes (here: all 4).
    assert {e.fields["id"] for e in letters} <= set(garbage)
    assert 2 <= len(letters) <= len(garbage)


def test_trim_settings_are_validated() -> None:
    with pytest.raises(InvalidInput):
        CommandServiceConfig(trim_interval_s=-1)
    with pytest.raises(InvalidInput):
        CommandServiceConfig(dead_letter_maxlen=0)
    assert CommandServiceConfig().trim_interval_s == 30.0
    assert CommandServiceConfig().dead_letter_maxlen == 10_000
