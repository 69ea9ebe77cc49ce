"""An unreachable or closed PostgreSQL surfaces as ServiceUnavailable(service="postgres").

No server needed: the pools point at a port nobody listens on (``min_size=0``, so creating
the pool does not connect; the first operation does).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeAlias

import anyio
import asyncpg
import pytest

from codeyard.adapters.postgres import PostgresWorkerRegistry, PostgresWorkQueue, migrate
from codeyard.domain.errors import ServiceUnavailable

pytestmark = pytest.mark.anyio

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # released: connecting now is refused


@pytest.fixture
async def dead_pool() -> AsyncIterator[Pool]:
    pool = await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{closed_port()}/codeyard", min_size=0, timeout=5
    )
    try:
        yield pool
    finally:
        with anyio.fail_after(10):
            await pool.close()


OPERATIONS: dict[str, Callable[[Pool], Awaitable[object]]] = {
    "enqueue": lambda p: PostgresWorkQueue(p).enqueue("q", {"a": 1}),
    "claim": lambda p: PostgresWorkQueue(p).claim("q", "w", lease=timedelta(seconds=1)),
    "complete": lambda p: PostgresWorkQueue(p).complete("j", "w"),
    "fail": lambda p: PostgresWorkQueue(p).fail("j", "w", error="x"),
    "depth": lambda p: PostgresWorkQueue(p).depth("q"),
    "wait": lambda p: PostgresWorkQueue(p).wait("q", timeout_s=5),
    "registry.get": lambda p: PostgresWorkerRegistry(p).get("w"),
    "registry.heartbeat": lambda p: PostgresWorkerRegistry(p).heartbeat("w"),
    "registry.stale": lambda p: PostgresWorkerRegistry(p).stale(datetime.now(UTC)),
    "migrate": migrate,
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
async def test_unreachable_server_raises_service_unavailable(
    dead_pool: Pool, operation: str
) -> None:
    with anyio.fail_after(10), pytest.raises(ServiceUnavailable) as info:
        await OPERATIONS[operation](dead_pool)

    assert info.value.fields["service"] == "postgres"
    assert info.value.retryable
    assert isinstance(info.value.__cause__, OSError)


async def test_closed_pool_raises_service_unavailable(dead_pool: Pool) -> None:
    await dead_pool.close()

    with pytest.raises(ServiceUnavailable) as info:
        await PostgresWorkQueue(dead_pool).get("j")

    assert info.value.fields["service"] == "postgres"
    assert isinstance(info.value.__cause__, asyncpg.InterfaceError)
