"""Migrations on a real PostgreSQL: applied once, idempotent, safe to run concurrently."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest

from codeyard.adapters.postgres.migrate import available_migrations, migrate

pytestmark = pytest.mark.anyio

TABLES = {"codeyard_jobs", "codeyard_workers", "codeyard_migrations"}


@pytest.fixture
async def pool(postgres_db: str) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await asyncpg.create_pool(postgres_db, min_size=1, max_size=6)
    try:
        yield pool
    finally:
        with anyio.fail_after(10):
            await pool.close()


async def tables(pool: asyncpg.Pool[asyncpg.Record]) -> set[str]:
    rows = await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'codeyard%'"
    )
    return {row["tablename"] for row in rows}


async def recorded(pool: asyncpg.Pool[asyncpg.Record]) -> list[str]:
    rows = await pool.fetch("SELECT name FROM codeyard_migrations ORDER BY name")
    return [row["name"] for row in rows]


def test_shipped_migrations_are_found_in_order() -> None:
    names = [m.name for m in available_migrations()]

    assert names[0] == "0001_initial"
    assert names == sorted(names)
    assert all(m.sql.strip() for m in available_migrations())


async def test_migrations_apply_once(pool: asyncpg.Pool[asyncpg.Record]) -> None:
    names = [m.name for m in available_migrations()]
    assert await tables(pool) == set()

    first = await migrate(pool)
    second = await migrate(pool)

    assert first == names
    assert second == []
    assert await tables(pool) == TABLES
    assert await recorded(pool) == names


async def test_concurrent_runs_apply_each_migration_once(
    pool: asyncpg.Pool[asyncpg.Record],
) -> None:
    results: list[list[str]] = []

    async def run() -> None:
        results.append(await migrate(pool))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(run)

    names = [m.name for m in available_migrations()]
    assert len(results) == 4
    assert sorted(name for result in results for name in result) == names
    assert await recorded(pool) == names
    assert await tables(pool) == TABLES
