"""Checking that a Redis client reaches its server, with redis-py's errors translated."""

from __future__ import annotations

import anyio
import redis.asyncio as aioredis
import redis.exceptions

from codeyard.domain.errors import ServiceUnavailable


async def ping_redis(client: aioredis.Redis, *, timeout_s: float) -> None:
    """PING ``client`` within ``timeout_s``; ``ServiceUnavailable(service="redis")``
    otherwise, so a wrong URL fails at start-up rather than at first use."""
    try:
        with anyio.fail_after(timeout_s):
            await client.ping()
    except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
        raise ServiceUnavailable(
            "Redis unreachable", service="redis", detail=str(exc) or type(exc).__name__
        ) from exc
