"""The WorkerRegistry contract (codeyard.ports.worker_registry), one suite for every adapter.

Each adapter is one param of the ``env`` fixture. Records carry explicit timestamps (stored
as given), so only the default ``heartbeat`` time depends on the adapter's clock: the
injected ``ManualClock`` for memory, the database's ``now()`` for Postgres.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import asyncpg
import pytest

from codeyard.adapters.memory.clock import ManualClock
from codeyard.adapters.memory.worker_registry import InMemoryWorkerRegistry
from codeyard.adapters.postgres.migrate import migrate
from codeyard.adapters.postgres.worker_registry import PostgresWorkerRegistry
from codeyard.domain.errors import (
    AlreadyExists,
    InvalidName,
    InvalidRequest,
    InvalidTransition,
    WorkerNotFound,
)
from codeyard.domain.worker import (
    Module,
    NetworkPolicy,
    Resources,
    SecretRef,
    WorkerRecord,
    WorkerSpec,
    WorkerStatus,
)
from codeyard.ports.worker_registry import WorkerRegistry

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SPEC = WorkerSpec(
    agent="codex",
    instructions="be brief",
    allowed_commands=("pytest", "ruff"),
    modules=(Module.PYTHON, Module.GIT, Module.NODE),
    resources=Resources(cpus=1.5, memory_mb=2048, disk_mb=512),
    network=NetworkPolicy.ALLOWLIST,
    allowed_hosts=("redis",),
    env={"LANG": "C.UTF-8"},
    secrets=(SecretRef(name="gh-token", env="GH_TOKEN"),),
    labels={"team": "core"},
)


@dataclass(frozen=True)
class RegistryEnv:
    registry: WorkerRegistry
    #: The registry's notion of now (exact for memory).
    now: Callable[[], datetime]
    #: How far a default heartbeat time may be from ``now()`` around the call.
    slack: timedelta
    #: Let the registry's clock move on (real time moves by itself for Postgres).
    tick: Callable[[], object] = lambda: None


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[RegistryEnv]:
    if request.param == "memory":
        clock = ManualClock(T0 + timedelta(days=1))
        yield RegistryEnv(
            InMemoryWorkerRegistry(clock), clock.now, timedelta(0), lambda: clock.advance(1)
        )
        return

    dsn: str = request.getfixturevalue("postgres_db")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        await migrate(pool)
        yield RegistryEnv(
            PostgresWorkerRegistry(pool), lambda: datetime.now(UTC), timedelta(seconds=2)
        )
    finally:
        with anyio.fail_after(10):
            await pool.close()


def record(
    worker_id: str, *, created: float = 0, beat: float | None = None, **fields: Any
) -> WorkerRecord:
    return WorkerRecord(
        worker_id=worker_id,
        spec=fields.pop("spec", WorkerSpec()),
        created_at=T0 + timedelta(seconds=created),
        heartbeat_at=T0 + timedelta(seconds=created if beat is None else beat),
        **fields,
    )


# --- register / get / deregister -------------------------------------------------------------


async def test_register_stores_the_record(env: RegistryEnv) -> None:
    rec = record("w1", spec=SPEC, host="node-a", image="img:1", container_id="c1", ip="10.0.0.2")

    stored = await env.registry.register(rec)

    assert stored == rec
    assert await env.registry.get("w1") == rec


async def test_register_an_existing_id_raises_already_exists(env: RegistryEnv) -> None:
    original = await env.registry.register(record("w1"))

    with pytest.raises(AlreadyExists):
        await env.registry.register(record("w1", created=5, host="other"))

    assert await env.registry.get("w1") == original


async def test_deregister_is_idempotent(env: RegistryEnv) -> None:
    await env.registry.register(record("w1"))

    await env.registry.deregister("w1")
    await env.registry.deregister("w1")
    await env.registry.deregister("never-there")

    assert await env.registry.get("w1") is None
    assert await env.registry.list_active() == []
    await env.registry.register(record("w1"))  # the id is free again
    assert await env.registry.get("w1") is not None


async def test_unknown_workers_raise_worker_not_found(env: RegistryEnv) -> None:
    assert await env.registry.get("ghost") is None  # except get
    with pytest.raises(WorkerNotFound):
        await env.registry.set_status("ghost", WorkerStatus.RUNNING)
    with pytest.raises(WorkerNotFound):
        await env.registry.heartbeat("ghost")
    with pytest.raises(WorkerNotFound):
        await env.registry.heartbeat("ghost", at=T0, status=WorkerStatus.IDLE)


# --- set_status ------------------------------------------------------------------------------


async def test_set_status_moves_the_worker_and_updates_given_fields(env: RegistryEnv) -> None:
    await env.registry.register(record("w1", spec=SPEC, host="node-a"))

    running = await env.registry.set_status(
        "w1", WorkerStatus.RUNNING, container_id="c1", ip="10.0.0.2"
    )
    busy = await env.registry.set_status("w1", WorkerStatus.BUSY, task_id="task-7")
    unhealthy = await env.registry.set_status("w1", WorkerStatus.UNHEALTHY, error="oom")
    idle = await env.registry.set_status("w1", WorkerStatus.IDLE)

    assert (running.status, running.container_id, running.ip) == (
        WorkerStatus.RUNNING,
        "c1",
        "10.0.0.2",
    )
    assert (busy.status, busy.container_id, busy.task_id) == (WorkerStatus.BUSY, "c1", "task-7")
    assert (unhealthy.status, unhealthy.error, unhealthy.task_id) == (
        WorkerStatus.UNHEALTHY,
        "oom",
        "task-7",
    )
    assert idle.status is WorkerStatus.IDLE
    assert (idle.spec, idle.host, idle.created_at) == (SPEC, "node-a", T0)
    assert await env.registry.get("w1") == idle
    with pytest.raises(InvalidTransition):  # nothing goes back to starting
        await env.registry.set_status("w1", WorkerStatus.STARTING)
    assert await env.registry.get("w1") == idle


async def test_terminal_states_are_final(env: RegistryEnv) -> None:
    for terminal in (WorkerStatus.STOPPED, WorkerStatus.FAILED):
        worker_id = f"w-{terminal.value}"
        await env.registry.register(record(worker_id))
        await env.registry.set_status(worker_id, WorkerStatus.RUNNING)
        ended = await env.registry.set_status(worker_id, terminal, error="bye")

        for status in WorkerStatus:
            if status is not terminal:
                with pytest.raises(InvalidTransition):
                    await env.registry.set_status(worker_id, status)
        again = await env.registry.set_status(worker_id, terminal)

        assert again == ended
        assert await env.registry.get(worker_id) == ended


async def test_set_status_validates_fields_atomically(env: RegistryEnv) -> None:
    rec = await env.registry.register(record("w1"))

    with pytest.raises(InvalidName):
        await env.registry.set_status("w1", WorkerStatus.RUNNING, task_id="not a name!")

    assert await env.registry.get("w1") == rec


# --- heartbeat -------------------------------------------------------------------------------


async def test_heartbeat_records_the_time(env: RegistryEnv) -> None:
    await env.registry.register(record("w1"))

    beat = await env.registry.heartbeat("w1", at=T0 + timedelta(seconds=30))

    assert beat.heartbeat_at == T0 + timedelta(seconds=30)
    assert beat.status is WorkerStatus.STARTING
    assert await env.registry.get("w1") == beat

    before = env.now()
    beat = await env.registry.heartbeat("w1")  # at defaults to now
    after = env.now()
    assert before - env.slack <= beat.heartbeat_at <= after + env.slack


async def test_heartbeat_can_change_the_status(env: RegistryEnv) -> None:
    await env.registry.register(record("w1"))

    beat = await env.registry.heartbeat("w1", at=T0, status=WorkerStatus.IDLE)
    assert beat.status is WorkerStatus.IDLE
    with pytest.raises(InvalidTransition):
        await env.registry.heartbeat("w1", status=WorkerStatus.STARTING)
    assert await env.registry.get("w1") == beat


async def test_heartbeat_on_a_terminal_worker_is_refused(env: RegistryEnv) -> None:
    for terminal in (WorkerStatus.STOPPED, WorkerStatus.FAILED):
        worker_id = f"w-{terminal.value}"
        await env.registry.register(record(worker_id))
        ended = await env.registry.set_status(worker_id, terminal)

        with pytest.raises(InvalidTransition):
            await env.registry.heartbeat(worker_id)
        with pytest.raises(InvalidTransition):
            await env.registry.heartbeat(worker_id, at=T0, status=terminal)

        assert await env.registry.get(worker_id) == ended


# --- list_active / stale ---------------------------------------------------------------------


async def test_list_active_returns_live_workers_oldest_first(env: RegistryEnv) -> None:
    for worker_id, created in [("c", 30), ("a", 10), ("stopped", 5), ("b", 20), ("b2", 20)]:
        await env.registry.register(record(worker_id, created=created))
    await env.registry.set_status("stopped", WorkerStatus.STOPPED)
    await env.registry.register(record("failed", created=1, status=WorkerStatus.FAILED))
    await env.registry.set_status("a", WorkerStatus.UNHEALTHY)

    active = await env.registry.list_active()

    # Equal created_at: registration order.
    assert [r.worker_id for r in active] == ["a", "b", "b2", "c"]
    assert active[0].status is WorkerStatus.UNHEALTHY


async def test_stale_lists_active_workers_with_old_heartbeats(env: RegistryEnv) -> None:
    await env.registry.register(record("fresh", created=0, beat=100))
    await env.registry.register(record("old2", created=20, beat=40))
    await env.registry.register(record("old1", created=10, beat=45))
    await env.registry.register(record("gone", created=0, beat=0))
    await env.registry.set_status("gone", WorkerStatus.STOPPED)
    await env.registry.register(record("edge", created=0, beat=50))

    stale = await env.registry.stale(T0 + timedelta(seconds=50))

    assert [r.worker_id for r in stale] == ["old1", "old2"]
    await env.registry.heartbeat("old1", at=T0 + timedelta(seconds=60))
    assert [r.worker_id for r in await env.registry.stale(T0 + timedelta(seconds=50))] == ["old2"]
    with pytest.raises(InvalidRequest):
        await env.registry.stale(datetime(2026, 1, 1))  # naive on purpose


# --- timings (started_at / ended_at) ---------------------------------------------------------


def assert_now(env: RegistryEnv, stamp: datetime | None, before: datetime) -> None:
    """``stamp`` was taken by the registry's clock between ``before`` and now."""
    assert stamp is not None
    assert before - env.slack <= stamp <= env.now() + env.slack


async def test_started_at_is_set_on_the_first_move_to_running(env: RegistryEnv) -> None:
    registered = await env.registry.register(record("w1"))
    beat = await env.registry.heartbeat("w1", at=T0 + timedelta(seconds=5))
    assert (registered.started_at, registered.ended_at) == (None, None)
    assert (beat.started_at, beat.ended_at) == (None, None)  # still STARTING

    before = env.now()
    running = await env.registry.set_status("w1", WorkerStatus.RUNNING)

    assert_now(env, running.started_at, before)
    assert running.ended_at is None
    assert await env.registry.get("w1") == running  # survives the round trip


async def test_started_at_is_never_overwritten(env: RegistryEnv) -> None:
    await env.registry.register(record("w1"))
    first = (await env.registry.set_status("w1", WorkerStatus.RUNNING)).started_at
    env.tick()  # a re-stamp would now differ from ``first``
    await env.registry.set_status("w1", WorkerStatus.UNHEALTHY, error="no heartbeat")
    revived = await env.registry.set_status("w1", WorkerStatus.RUNNING)
    await env.registry.heartbeat("w1", status=WorkerStatus.UNHEALTHY)
    again = await env.registry.heartbeat("w1", status=WorkerStatus.RUNNING)
    busy = await env.registry.set_status("w1", WorkerStatus.BUSY, task_id="t1")

    assert first is not None
    assert revived.started_at == again.started_at == busy.started_at == first
    stored = await env.registry.get("w1")
    assert stored is not None
    assert stored.started_at == first


async def test_a_worker_never_up_has_no_started_at(env: RegistryEnv) -> None:
    await env.registry.register(record("w1"))

    unhealthy = await env.registry.set_status("w1", WorkerStatus.UNHEALTHY, error="pull failed")
    failed = await env.registry.set_status("w1", WorkerStatus.FAILED)

    assert unhealthy.started_at is None
    assert failed.started_at is None
    assert failed.ended_at is not None


async def test_ended_at_is_set_on_a_terminal_status(env: RegistryEnv) -> None:
    for terminal in (WorkerStatus.STOPPED, WorkerStatus.FAILED):
        worker_id = f"w-{terminal.value}"
        await env.registry.register(record(worker_id))
        started = await env.registry.set_status(worker_id, WorkerStatus.RUNNING)
        assert started.ended_at is None

        before = env.now()
        ended = await env.registry.set_status(worker_id, terminal, error="bye")
        env.tick()  # a re-stamp would now differ
        again = await env.registry.set_status(worker_id, terminal)  # idempotent repeat

        assert_now(env, ended.ended_at, before)
        assert ended.started_at == started.started_at
        assert again.ended_at == ended.ended_at
        assert await env.registry.get(worker_id) == ended


async def test_heartbeat_status_changes_stamp_timings_with_the_registry_clock(
    env: RegistryEnv,
) -> None:
    await env.registry.register(record("w1"))
    heartbeat_time = T0 + timedelta(seconds=30)  # the caller's time: never a timing

    before = env.now()
    up = await env.registry.heartbeat("w1", at=heartbeat_time, status=WorkerStatus.IDLE)
    down = await env.registry.heartbeat("w1", at=heartbeat_time, status=WorkerStatus.STOPPED)

    assert up.heartbeat_at == heartbeat_time
    assert_now(env, up.started_at, before)
    assert up.ended_at is None
    assert down.started_at == up.started_at
    assert_now(env, down.ended_at, before)
    assert await env.registry.get("w1") == down


async def test_registered_timings_are_stored_as_given(env: RegistryEnv) -> None:
    rec = record(
        "w1",
        status=WorkerStatus.FAILED,
        started_at=T0 + timedelta(seconds=1),
        ended_at=T0 + timedelta(seconds=2),
    )

    stored = await env.registry.register(rec)

    assert stored == rec
    assert await env.registry.get("w1") == rec


def test_a_live_record_cannot_carry_an_end_time() -> None:
    with pytest.raises(InvalidRequest):
        record("w1", status=WorkerStatus.RUNNING, ended_at=T0)
