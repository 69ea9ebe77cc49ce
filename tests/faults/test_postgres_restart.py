"""PostgreSQL restarted under a serving manager (issue #9): the manager on the
local-process runtime with a Postgres worker registry keeps serving while its (private)
Postgres goes down for a few seconds and comes back on the same port.

No command is lost or failed: one sent while Postgres is down waits for it (the command
service retries it with back-off, ``store_outage_s``) and every command gets exactly one
reply, the normal one. The figure is the longest reply latency of the commands sent
during the outage, from the Redis entry ids of command and reply (one clock). An outage
longer than ``store_outage_s`` gets exactly one typed ``service_unavailable`` reply, and
the manager serves normally once Postgres is back."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import asyncpg
import pytest

from codeyard.adapters.postgres import PostgresWorkerRegistry, migrate
from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.domain.commands import AnyCommand, GetStatus, ListWorkers, Reply, command_fields
from codeyard.domain.errors import ServiceUnavailable, error_from_dict
from codeyard.domain.streams import COMMANDS_STREAM, StreamMessage, response_stream
from codeyard.domain.worker import WorkerRecord, WorkerSpec
from codeyard.testing.model_server import ModelServer, Scenario
from tests import services
from tests.faults.command_fuzz import wait_for
from tests.integration.manager_local_support import local_config, local_manager

pytestmark = [pytest.mark.anyio, pytest.mark.faults, pytest.mark.postgres, pytest.mark.slow]

#: Commands sent before the restart and after Postgres is back; more go while it is down.
BEFORE = AFTER = 30
DOWN_S = 3.0
#: A worker another manager owns: ``status`` of it is a normal, successful answer.
KNOWN = "w-faults-known"


@pytest.fixture
def private_postgres() -> Iterator[services.PostgresServer]:
    """A PostgreSQL cluster of this test alone: restarting the shared one would break the
    tests running in parallel."""
    bindir = services.find_postgres_bindir()
    if bindir is None:
        services.service_unavailable("PostgreSQL", "no initdb found")
    try:
        server = services.start_postgres(bindir)
        server.create_database("codeyard")
    except services.ServiceStartError as exc:
        services.service_unavailable("private PostgreSQL", str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def registry(
    private_postgres: services.PostgresServer,
) -> AsyncIterator[PostgresWorkerRegistry]:
    pool = await asyncpg.create_pool(private_postgres.dsn("codeyard"), min_size=1, max_size=4)
    try:
        await migrate(pool)
        registry = PostgresWorkerRegistry(pool)
        now = datetime.now(UTC)
        await registry.register(
            WorkerRecord(
                worker_id=KNOWN,
                spec=WorkerSpec(),
                host="faults-elsewhere",
                created_at=now,
                heartbeat_at=now,
            )
        )
        yield registry
    finally:
        with anyio.fail_after(10):
            await pool.close()


def _ms(entry_id: str) -> int:
    """The Redis server time (ms) an entry was added at."""
    return int(entry_id.partition("-")[0])


async def _publish(bus: RedisEventBus, i: int) -> tuple[str, str]:
    """A ``list`` or a ``status`` of the known worker; its request id and entry id."""
    rid = uuid.uuid4().hex
    command: AnyCommand = (
        ListWorkers(request_id=rid) if i % 2 else GetStatus(request_id=rid, worker_id=KNOWN)
    )
    return rid, await bus.publish(COMMANDS_STREAM, command_fields(command))


async def _answers(bus: RedisEventBus, rid: str) -> list[StreamMessage]:
    return await bus.read(response_stream(rid), count=10)


async def test_no_command_is_lost_or_failed_across_a_postgres_restart(
    private_postgres: services.PostgresServer,
    registry: PostgresWorkerRegistry,
    redis_db: str,
    tmp_path: Path,
) -> None:
    sent: list[tuple[str, str, bool]] = []  # request id, command entry id, sent while down
    outage_started, restarted = anyio.Event(), anyio.Event()
    async with ModelServer(Scenario.text("ok")) as server:
        config = local_config(redis_db, server, "faults-pg-restart")
        async with local_manager(
            redis_db, config, tmp_path=tmp_path, registry=registry
        ) as m:  # fmt: skip

            async def send_all() -> None:
                for i in range(BEFORE):
                    sent.append((*await _publish(m.bus, i), False))
                    await anyio.sleep(0.02)
                outage_started.set()
                while not restarted.is_set():  # one every 0.1 s while Postgres is down
                    sent.append((*await _publish(m.bus, len(sent)), True))
                    with anyio.move_on_after(0.1):
                        await restarted.wait()
                for _ in range(AFTER):
                    sent.append((*await _publish(m.bus, len(sent)), False))
                    await anyio.sleep(0.02)

            async def restart_postgres() -> None:
                await outage_started.wait()
                restart = functools.partial(private_postgres.restart, down_s=DOWN_S)
                await anyio.to_thread.run_sync(restart)
                restarted.set()

            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(send_all)
                tg.start_soon(restart_postgres)

            async def all_answered() -> bool:
                return all([await m.bus.length(response_stream(rid)) for rid, _, _ in sent])

            await wait_for(all_answered, 90)
            took = time.monotonic() - started
            await anyio.sleep(0.5)  # a second reply would show now
            answers = {rid: await _answers(m.bus, rid) for rid, _, _ in sent}
    during = [(rid, entry) for rid, entry, down in sent if down]
    assert len(during) >= 20, "the outage must cover many commands"
    for rid, _, _ in sent:
        (entry,) = answers[rid]  # exactly one reply each
        reply = Reply.from_fields(entry.fields)
        assert reply.ok, reply  # no service_unavailable, nothing else
        assert reply.request_id == rid
    latencies = sorted(_ms(answers[rid][0].id) - _ms(entry) for rid, entry in during)
    median = latencies[len(latencies) // 2]
    print(
        f"{len(sent)} commands across a {DOWN_S:.0f} s Postgres outage, all answered ok in "
        f"{took:.1f} s; {len(during)} sent during the outage: max reply latency "
        f"{latencies[-1] / 1000:.2f} s (median {median / 1000:.2f} s)"
    )


async def test_an_outage_longer_than_store_outage_s_gets_one_service_unavailable(
    private_postgres: services.PostgresServer,
    registry: PostgresWorkerRegistry,
    redis_db: str,
    tmp_path: Path,
) -> None:
    restarted = anyio.Event()
    async with ModelServer(Scenario.text("ok")) as server:
        config = local_config(redis_db, server, "faults-pg-long", store_outage_s=1.0)
        async with local_manager(
            redis_db, config, tmp_path=tmp_path, registry=registry
        ) as m, anyio.create_task_group() as tg:  # fmt: skip

            async def restart_postgres() -> None:
                restart = functools.partial(private_postgres.restart, down_s=4.0)
                await anyio.to_thread.run_sync(restart)
                restarted.set()

            tg.start_soon(restart_postgres)

            async def postgres_down() -> bool:
                try:
                    await registry.get(KNOWN)
                except ServiceUnavailable:
                    return True
                return False

            await wait_for(postgres_down, 10)
            rid, _ = await _publish(m.bus, 0)  # a status: needs Postgres

            async def answered() -> bool:
                return bool(await m.bus.length(response_stream(rid)))

            await wait_for(answered, 10)
            assert not restarted.is_set(), "Postgres came back before the command gave up"
            await restarted.wait()
            after, _ = await _publish(m.bus, 1)

            async def served_again() -> bool:
                return bool(await m.bus.length(response_stream(after)))

            await wait_for(served_again, 30)
            await anyio.sleep(0.5)  # a second reply would show now
            (first,) = await _answers(m.bus, rid)
            (second,) = await _answers(m.bus, after)
    reply = Reply.from_fields(first.fields)
    assert reply.error_code == "service_unavailable", reply
    assert reply.error is not None
    fields = error_from_dict(reply.error).fields
    assert 1.0 <= fields["waited_s"] < 2.0
    assert fields["service"] == "postgres"
    assert Reply.from_fields(second.fields).ok
    print(f"outage outlasting store_outage_s=1: one service_unavailable reply ({reply.error})")
