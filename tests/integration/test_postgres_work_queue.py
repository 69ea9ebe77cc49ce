"""PostgresWorkQueue specifics beyond the shared contract: the LISTEN connection's life."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import anyio
import asyncpg
import pytest

from codeyard.adapters.postgres import PostgresWorkQueue, migrate

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pool(postgres_db: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await asyncpg.create_pool(postgres_db, min_size=1, max_size=4)
    try:
        await migrate(pool)
        yield pool
    finally:
        with anyio.fail_after(10):
            await pool.close()


def in_use(pool: asyncpg.Pool[asyncpg.Record]) -> int:
    return pool.get_size() - pool.get_idle_size()


async def test_aclose_gives_the_listen_connection_back(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    queue = PostgresWorkQueue(pool)
    await queue.wait("q", timeout_s=0.05)
    assert in_use(pool) == 1  # the LISTEN connection

    await queue.aclose()
    await queue.aclose()  # idempotent

    assert in_use(pool) == 0
    # Still usable afterwards; wait only polls now.
    await queue.enqueue("q", {})
    with anyio.fail_after(2):
        await queue.wait("q", timeout_s=5)
    assert in_use(pool) == 0


_LISTENERS = "FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"


async def test_wait_listens_again_after_losing_its_connection(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    # A long poll interval: only a notification can wake the final wait quickly.
    async with PostgresWorkQueue(pool, poll_interval_s=30) as queue:
        await queue.wait("q", timeout_s=0.05)
        killed = await pool.fetch(f"SELECT pg_terminate_backend(pid) {_LISTENERS}")
        assert [row[0] for row in killed] == [True]

        await anyio.sleep(0.1)  # the driver notices; the pool reclaims the connection
        await queue.wait("q", timeout_s=0.05)  # LISTENs again on a new connection
        assert await pool.fetchval(f"SELECT count(*) {_LISTENERS}") == 1
        assert in_use(pool) == 1

        async def enqueue_later() -> None:
            await anyio.sleep(0.2)
            await queue.enqueue("q", {})

        began = anyio.current_time()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(enqueue_later)
                await queue.wait("q", timeout_s=5)
        assert anyio.current_time() - began < 2
    assert in_use(pool) == 0


async def test_a_retried_job_wakes_waiters(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    async with PostgresWorkQueue(pool, poll_interval_s=30) as queue:
        job = await queue.enqueue("q", {})
        await queue.claim("q", "w1", lease=timedelta(seconds=60))

        async def fail_later() -> None:
            await anyio.sleep(0.1)
            await queue.fail(job.id, "w1", error="boom")

        began = anyio.current_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(fail_later)
            await queue.wait("q", timeout_s=5)
        assert anyio.current_time() - began < 2
