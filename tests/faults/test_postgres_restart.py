"""PostgreSQL restarted under a serving manager (issue #9): the manager on the
local-process runtime with a Postgres worker registry keeps serving while its (private)
Postgres goes down and comes back on the same port. Every command gets exactly one typed
reply; those sent while Postgres is down may be ``service_unavailable`` (nothing is lost:
the client is told), every command after it is back is answered normally, which shows the
pool reconnected."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import asyncpg
import pytest

from codeyard.adapters.postgres import PostgresWorkerRegistry, migrate
from codeyard.domain.commands import AnyCommand, GetStatus, ListWorkers, command_fields
from codeyard.domain.streams import COMMANDS_STREAM
from codeyard.testing.model_server import ModelServer, Scenario
from tests import services
from tests.faults.command_fuzz import replies, wait_for
from tests.integration.manager_local_support import local_config, local_manager

pytestmark = [pytest.mark.anyio, pytest.mark.faults, pytest.mark.postgres, pytest.mark.slow]

COMMANDS = 90
RESTART_AFTER = 30
#: Commands sent this long after Postgres answered again must all be answered normally.
SETTLE_S = 1.0


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
        yield PostgresWorkerRegistry(pool)
    finally:
        with anyio.fail_after(10):
            await pool.close()


async def test_every_command_gets_a_typed_reply_across_a_postgres_restart(
    private_postgres: services.PostgresServer,
    registry: PostgresWorkerRegistry,
    redis_db: str,
    tmp_path: Path,
) -> None:
    sent: list[tuple[str, float, bool]] = []  # request id, when sent, is a list
    halfway, restarted = anyio.Event(), anyio.Event()
    back_at = 0.0
    async with ModelServer(Scenario.text("ok")) as server:
        config = local_config(redis_db, server, "faults-pg-restart")
        async with local_manager(
            redis_db, config, tmp_path=tmp_path, registry=registry
        ) as m:  # fmt: skip

            async def send_all() -> None:
                for i in range(COMMANDS):
                    if i == RESTART_AFTER // 2:
                        halfway.set()
                    if i == RESTART_AFTER:  # the rest after Postgres is back
                        await restarted.wait()
                    rid, is_list = uuid.uuid4().hex, i % 2 == 1
                    command: AnyCommand = (
                        ListWorkers(request_id=rid)
                        if is_list
                        else GetStatus(request_id=rid, worker_id="w-nobody")
                    )
                    await m.bus.publish(COMMANDS_STREAM, command_fields(command))
                    sent.append((rid, time.monotonic(), is_list))
                    await anyio.sleep(0.02)

            async def restart_postgres() -> None:
                nonlocal back_at
                await halfway.wait()
                restart = functools.partial(private_postgres.restart, down_s=1.0)
                await anyio.to_thread.run_sync(restart)
                back_at = time.monotonic()
                restarted.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(send_all)
                tg.start_soon(restart_postgres)

            async def all_answered() -> bool:
                return all([await m.bus.length(f"worker:responses:{rid}") for rid, _, _ in sent])

            await wait_for(all_answered, 60)
            answers = {rid: await replies(m.bus, rid) for rid, _, _ in sent}
            still = await m.client.list()
    unavailable = 0
    for rid, at, is_list in sent:
        (reply,) = answers[rid]
        normal = reply.ok if is_list else reply.error_code == "worker_not_found"
        if at >= back_at + SETTLE_S:
            assert normal, reply
        else:
            assert normal or reply.error_code == "service_unavailable", reply
            unavailable += not normal
    assert still == []
    print(f"{COMMANDS} commands answered across a Postgres restart, {unavailable} unavailable")
