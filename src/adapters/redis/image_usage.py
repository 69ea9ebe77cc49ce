"""RedisImageUsage: the Docker image cache's ledger of last uses and its cross-process lock.

Layout (``key`` defaults to ``codeyard:images``):

- ``key`` is a sorted set: member = image content hash, score = last use in integer
  microseconds since the epoch. Integer microseconds stay exact in a double (< 2**53 until
  year 2255), so a time read back equals the time written. ``ZADD GT`` keeps the latest use
  when processes with slightly different clocks touch one hash. ``ZRANGE`` is LRU order.
- ``key:lock:<hash>`` is a build/remove lock: ``SET NX PX ttl`` with a random token, renewed
  every ``ttl/3`` by a task while held, released with a compare-and-delete script. A holder
  that dies stops renewing and the lock lapses after at most ``ttl``; a waiter then takes
  it. Should a renewal find the lock gone (the holder stalled for longer than ``ttl``), the
  holder carries on: the worst outcome is a second, identical build of the same hash, not
  a wrong image, so correctness does not rest on the lock alone.

Works with clients made with or without ``decode_responses``. Driver errors become
``ServiceUnavailable(service="redis")``.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import cast

import anyio
import redis.asyncio as aioredis
import redis.exceptions as rexc

from codeyard.domain.errors import InvalidInput, ServiceUnavailable

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Seconds a lock release may take during cleanup before it is left to expire.
_RELEASE_DEADLINE_S = 5.0


def to_micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def from_micros(micros: float) -> datetime:
    return _EPOCH + timedelta(microseconds=int(micros))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@contextmanager
def _translated(op: str) -> Iterator[None]:
    try:
        yield
    except (rexc.ConnectionError, rexc.TimeoutError, TimeoutError) as exc:
        raise ServiceUnavailable(f"redis unreachable during {op}", service="redis", op=op) from exc
    except rexc.RedisError as exc:
        raise ServiceUnavailable(
            f"redis failed during {op}", service="redis", op=op, detail=str(exc)
        ) from exc


class RedisImageUsage:
    """Last-use times of cached images and a per-hash lock shared by every process."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        key: str = "codeyard:images",
        lock_ttl_s: float = 30.0,
        poll_s: float = 0.1,
    ) -> None:
        if lock_ttl_s <= 0 or poll_s <= 0:
            raise InvalidInput(
                "lock_ttl_s and poll_s must be positive", lock_ttl_s=lock_ttl_s, poll_s=poll_s
            )
        self._client = client
        self._key = key
        self._ttl_ms = max(1, round(lock_ttl_s * 1000))
        self._poll_s = poll_s
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    async def touch(self, content_hash: str, at: datetime) -> datetime:
        """Record a use at ``at``; the hash's last use afterwards (a later one may exist)."""
        with _translated("touch"):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.zadd(self._key, {content_hash: to_micros(at)}, gt=True)
                pipe.zscore(self._key, content_hash)
                _, score = await pipe.execute()
        return from_micros(score)

    async def last_used(self, content_hash: str) -> datetime | None:
        with _translated("last_used"):
            score = await self._client.zscore(self._key, content_hash)
        return None if score is None else from_micros(score)

    async def entries(self) -> list[tuple[str, datetime]]:
        """Every tracked hash with its last use, least recently used first."""
        with _translated("entries"):
            rows = await self._client.zrange(self._key, 0, -1, withscores=True)
        # WITHSCORES replies are (member, score) pairs; the stubs' union covers every form.
        pairs = cast("list[tuple[bytes | str, float]]", rows)
        return [(_text(member), from_micros(score)) for member, score in pairs]

    async def forget(self, content_hash: str) -> None:
        with _translated("forget"):
            await self._client.zrem(self._key, content_hash)

    @asynccontextmanager
    async def lock(self, content_hash: str, *, wait: bool = True) -> AsyncIterator[bool]:
        """Hold the hash's lock for the block; yields whether it was taken.

        ``wait=True`` polls until the lock is free (always yields ``True``);
        ``wait=False`` yields ``False`` at once when another holder has it.
        """
        key = f"{self._key}:lock:{content_hash}"
        token = secrets.token_hex(16)
        while True:
            with _translated("lock"):
                taken = await self._client.set(key, token, nx=True, px=self._ttl_ms)
            if taken or not wait:
                break
            await anyio.sleep(self._poll_s)
        if not taken:
            yield False
            return
        failure: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._keep_alive, key, token)
                try:
                    yield True
                except BaseException as exc:  # re-raised below, unwrapped
                    # Raised inside the task group, the block's own error (or cancellation)
                    # would come out wrapped in an ExceptionGroup; callers expect it as is.
                    failure = exc
                finally:
                    tg.cancel_scope.cancel()
            if failure is not None:
                raise failure
        finally:
            # Shielded so a cancelled holder still frees the lock; bounded so a dead Redis
            # cannot hang cleanup (the lock then lapses after its ttl).
            # A failed release is not raised over the block's outcome: the lock lapses.
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(_RELEASE_DEADLINE_S),
                contextlib.suppress(rexc.RedisError),
            ):
                await self._release(keys=[key], args=[token])

    async def _keep_alive(self, key: str, token: str) -> None:
        while True:
            await anyio.sleep(self._ttl_ms / 3000)
            try:
                await self._renew(keys=[key], args=[token, self._ttl_ms])
            except rexc.RedisError:
                # Not fatal: the holder keeps working and retries; if Redis stays away the
                # lock lapses, which at worst allows one duplicate build (see module doc).
                continue
