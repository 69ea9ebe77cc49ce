"""Hypothesis-made command entries on ``worker:commands`` of a real manager (local-process
runtime, real Redis): every entry gets a typed reply or is dead-lettered, valid creates
mixed in succeed, and the manager keeps answering (issue #9). The entries and the check
are in tests/faults/command_fuzz.py; bench/soak_fuzz.py sends 10,000 of them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeyard.domain.worker import WorkerStatus
from codeyard.testing.model_server import ModelServer, Scenario
from tests.contract.test_command_service import Garbage
from tests.faults import command_fuzz as fuzz
from tests.integration.manager_local_support import LocalManager, local_config, local_manager

pytestmark = [pytest.mark.anyio, pytest.mark.faults, pytest.mark.slow]

_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@pytest.fixture
async def manager(redis_db: str, tmp_path: Path) -> AsyncIterator[LocalManager]:
    async with ModelServer(Scenario.text("ok")) as server:
        config = local_config(redis_db, server, "faults-fuzz")
        async with local_manager(redis_db, config, tmp_path=tmp_path) as m:
            yield m


@settings(_SETTINGS, max_examples=6)
@given(batch=st.lists(fuzz.entries, min_size=50, max_size=50))
async def test_fuzzed_commands_get_typed_replies_or_dead_letters(
    manager: LocalManager, batch: list[Garbage]
) -> None:
    sent = await fuzz.publish(manager.bus, batch)
    elapsed = await fuzz.check_answers(manager.bus, sent, 20)
    assert await manager.client.list() == []  # still serving, and nothing was created
    print(f"{sent.count} fuzzed commands answered in {elapsed:.2f} s")


@settings(_SETTINGS, max_examples=1)
@given(batch=st.lists(fuzz.entries, min_size=40, max_size=40), at=st.integers(0, 40))
async def test_valid_creates_mixed_into_the_junk_succeed(
    manager: LocalManager, batch: list[Garbage], at: int
) -> None:
    sent = await fuzz.publish(manager.bus, batch[:at])
    await fuzz.publish_create(manager.bus, sent)
    await fuzz.publish(manager.bus, batch[at:], sent)
    await fuzz.check_answers(manager.bus, sent, 20)
    (reply,) = await fuzz.replies(manager.bus, sent.creates[0])
    assert isinstance(reply.result, dict)
    worker_id = str(reply.result["worker_id"])
    status = await manager.client.status(worker_id)  # the manager still answers a status
    assert status.status in (WorkerStatus.STARTING, WorkerStatus.RUNNING)
    deleted = await manager.client.delete(worker_id)
    assert deleted.status is WorkerStatus.STOPPED
