"""RedisEventBus translates driver failures at the adapter edge and handles socket timeouts."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.domain.errors import Conflict, InvalidInput, ServiceUnavailable

pytestmark = pytest.mark.anyio

Operation = Callable[[RedisEventBus], Awaitable[object]]

OPERATIONS: dict[str, Operation] = {
    "publish": lambda bus: bus.publish("s", {"k": "v"}, maxlen=10),
    "publish_many": lambda bus: bus.publish_many("s", [{"k": "v"}, {"k": "w"}], maxlen=10),
    "read": lambda bus: bus.read("s"),
    "read_blocking": lambda bus: bus.read("s", block_s=1),
    "ensure_group": lambda bus: bus.ensure_group("s", "g"),
    "read_group": lambda bus: bus.read_group("s", "g", "c", block_s=1),
    "ack": lambda bus: bus.ack("s", "g", ["1-1"]),
    "claim_stale": lambda bus: bus.claim_stale("s", "g", "c", min_idle_s=0),
    "keep_alive": lambda bus: bus.keep_alive("s", "g", "c", ["1-1"]),
    "pending_count": lambda bus: bus.pending_count("s", "g"),
    "length": lambda bus: bus.length("s"),
    "delete_stream": lambda bus: bus.delete_stream("s"),
}


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def assert_translated(exc: ServiceUnavailable) -> None:
    assert exc.fields["service"] == "redis"
    assert exc.retryable
    assert not isinstance(exc, redis.exceptions.RedisError)
    assert isinstance(exc.__cause__, redis.exceptions.RedisError)


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
async def test_closed_port_raises_service_unavailable(operation: str) -> None:
    bus = RedisEventBus.from_url(f"redis://127.0.0.1:{closed_port()}/0")
    try:
        with anyio.fail_after(5), pytest.raises(ServiceUnavailable) as info:
            await OPERATIONS[operation](bus)
        assert_translated(info.value)
    finally:
        await bus.aclose()


@pytest.mark.parametrize("operation", ["publish", "publish_many", "read", "read_group"])
async def test_silent_server_times_out_as_service_unavailable(operation: str) -> None:
    async def never_answer(conn: anyio.abc.SocketStream) -> None:
        async with conn:
            await anyio.sleep_forever()

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, never_answer)
        bus = RedisEventBus.from_url(
            f"redis://127.0.0.1:{port}/0",
            socket_timeout=0.2,
            socket_connect_timeout=0.2,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            with anyio.fail_after(5), pytest.raises(ServiceUnavailable) as info:
                await OPERATIONS[operation](bus)
            assert_translated(info.value)
        finally:
            await bus.aclose()
            tg.cancel_scope.cancel()


async def test_block_longer_than_socket_timeout_is_not_an_error(redis_url: str) -> None:
    bus = RedisEventBus.from_url(redis_url, socket_timeout=0.2)
    try:
        started = anyio.current_time()
        assert await bus.read("test:block-longer-than-socket-timeout", block_s=0.5) == []
        assert anyio.current_time() - started >= 0.45
    finally:
        await bus.aclose()


def test_client_must_decode_responses() -> None:
    with pytest.raises(InvalidInput):
        RedisEventBus(aioredis.Redis())


async def test_a_key_of_another_type_is_a_conflict_for_both_publishes(redis_url: str) -> None:
    # Checks the reply's kind survives publish_many's pipeline (redis-py would prefix it).
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    bus, key = RedisEventBus(client), "test:wrong-type-publish"
    try:
        await client.set(key, "a string")
        with pytest.raises(Conflict):
            await bus.publish(key, {"k": "v"})
        with pytest.raises(Conflict):
            await bus.publish_many(key, [{"k": "v"}, {"k": "w"}])
        assert await client.get(key) == "a string"
    finally:
        await client.delete(key)
        await bus.aclose()
