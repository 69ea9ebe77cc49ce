"""A warm claim cut short by any failure, a store outage included, removes its standby,
its login and its assignment stream (a kept standby would run as the worker beside the
retry's container). A paused create is
forgotten once no retry can come. In-memory fakes, manual clock (``claim`` fixture of
test_manager_claim)."""

from __future__ import annotations

from typing import Any

import pytest

from codeyard.app.manager.create import WorkerCreator
from codeyard.domain.commands import CreateWorker
from codeyard.domain.errors import ServiceUnavailable
from codeyard.domain.streams import standby_stream
from codeyard.domain.worker import WorkerRecord, WorkerStatus
from tests.unit.test_manager_claim import Claim, claim  # noqa: F401 (the fixture)

pytestmark = pytest.mark.anyio


def _failing_set_status(
    world: Claim, monkeypatch: pytest.MonkeyPatch, *, service: str, commit: bool
) -> None:
    """The write that records the container fails once (after taking effect: ``commit``)."""
    real = world.registry.set_status
    left = [1]

    async def set_status(worker_id: str, status: WorkerStatus, **kw: Any) -> WorkerRecord:
        if kw.get("container_id") and left[0]:
            left[0] -= 1
            if commit:
                await real(worker_id, status, **kw)
            raise ServiceUnavailable("store down", service=service)
        return await real(worker_id, status, **kw)

    monkeypatch.setattr(world.registry, "set_status", set_status)


async def test_a_store_outage_removes_the_claimed_standby_and_the_retry_makes_one_worker(
    claim: Claim,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (standby,) = await claim.runtime.list()
    (slot,) = await claim.logins.slots()
    _failing_set_status(claim, monkeypatch, service="postgres", commit=False)
    command = CreateWorker(request_id="r1")
    with pytest.raises(ServiceUnavailable):
        await claim.manager.handler.handle(command)
    # Removed with its login and assignment: it must not run as the worker beside the
    # retry's container.
    assert standby.id not in [c.id for c in await claim.runtime.list()]
    assert slot not in await claim.logins.slots()
    assert await claim.manager.app.event_bus.length(standby_stream(slot)) == 0
    result = await claim.manager.handler.handle(command)  # the command service's retry
    assert isinstance(result, dict)
    worker_id = str(result["worker_id"])
    record = await claim.registry.get(worker_id)
    assert record is not None
    assert record.container_id is not None
    assert record.container_id != standby.id
    assert [c.id for c in await claim.runtime.list() if c.id == record.container_id] == [
        record.container_id
    ]


async def test_a_retry_after_a_lost_commit_runs_no_second_worker(
    claim: Claim,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (standby,) = await claim.runtime.list()
    _failing_set_status(claim, monkeypatch, service="postgres", commit=True)
    command = CreateWorker(request_id="r1")
    with pytest.raises(ServiceUnavailable):
        await claim.manager.handler.handle(command)
    result = await claim.manager.handler.handle(command)  # the command service's retry
    assert isinstance(result, dict)
    record = await claim.registry.get(str(result["worker_id"]))
    assert record is not None
    # The record names the removed standby: the watcher reports that worker dead (as any
    # death) rather than a second container running as it.
    assert record.container_id == standby.id
    assert standby.id not in [c.id for c in await claim.runtime.list()]
    assert claim.manager.watcher.watched() == [record.worker_id]


async def test_a_failed_warm_claim_deletes_its_assignment_stream(
    claim: Claim,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (standby,) = await claim.runtime.list()
    (slot,) = await claim.logins.slots()
    _failing_set_status(claim, monkeypatch, service="engine", commit=False)  # not a store
    with pytest.raises(ServiceUnavailable):
        await claim.manager.handler.handle(CreateWorker(request_id="r1"))
    assert standby.id not in [c.id for c in await claim.runtime.list()]
    assert slot not in await claim.logins.slots()
    assert await claim.manager.app.event_bus.length(standby_stream(slot)) == 0


async def test_a_paused_create_is_forgotten_once_no_retry_can_come(
    claim: Claim,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    creator: WorkerCreator = claim.manager.handler._creator
    _failing_set_status(claim, monkeypatch, service="postgres", commit=False)
    with pytest.raises(ServiceUnavailable):
        await claim.manager.handler.handle(CreateWorker(request_id="r1"))
    (paused,) = creator._paused
    assert creator._was_paused(paused)
    claim.clock.advance(60 + 10 + 1)  # store_outage_s + one back-off, and then some
    assert not creator._was_paused(paused)
    assert creator._paused == {}
