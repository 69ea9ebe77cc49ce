"""A publish whose reply is lost is not appended twice (real redis-server, real redis-py).

redis-py sends a command again after a connection error when its client has a ``Retry``
(``Redis(...)``'s default). When Redis had applied the command and only the reply was
lost, that retry applies it again: a worker's output stream got a batch twice, its
``result`` included. The proxy (tests/integration/lost_reply_proxy.py) loses exactly one
successful reply. Plain publishes show the hazard is real; idempotent ones (what the
worker's BatchingPublisher sends) append once.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import anyio
import pytest
import redis.asyncio as aioredis

from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.app.event_publisher import BatchingPublisher
from codeyard.domain.errors import ServiceUnavailable
from tests.integration.lost_reply_proxy import LostReplyProxy, lost_reply_proxy

pytestmark = pytest.mark.anyio


@pytest.fixture
async def proxy(redis_db: str) -> AsyncIterator[LostReplyProxy]:
    async with lost_reply_proxy(redis_db) as running:
        yield running


@pytest.fixture
async def admin(redis_db: str) -> AsyncIterator[aioredis.Redis]:
    """A direct connection, to see what is on the stream."""
    client = aioredis.Redis.from_url(redis_db, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def bus(proxy: LostReplyProxy) -> AsyncIterator[RedisEventBus]:
    """A bus through the proxy on a client with redis-py's default ``Retry``."""
    db = int(urlsplit(proxy.url).path.lstrip("/") or 0)
    client = aioredis.Redis(host="127.0.0.1", port=proxy.port, db=db, decode_responses=True)
    retry = client.get_retry()
    assert retry is not None
    assert retry.get_retries() > 0
    bus = RedisEventBus(client)
    try:
        yield bus
    finally:
        await bus.aclose()


@pytest.fixture
def stream() -> str:
    return f"worker:{uuid.uuid4().hex}:output"


def event(n: int) -> dict[str, str]:
    """An entry as the worker writes them: unique (the event JSON carries a unique id)."""
    return {"event": f'{{"id":"{uuid.uuid4().hex}","seq":{n}}}', "type": "message"}


async def entries(admin: aioredis.Redis, stream: str) -> list[tuple[str, dict[str, str]]]:
    return cast(list[tuple[str, dict[str, str]]], await admin.xrange(stream))


async def stored(admin: aioredis.Redis, stream: str) -> list[dict[str, str]]:
    return [fields for _, fields in await entries(admin, stream)]


async def test_a_retried_plain_publish_appends_twice(
    bus: RedisEventBus, proxy: LostReplyProxy, admin: aioredis.Redis, stream: str
) -> None:
    await bus.publish(stream, event(0))  # connected, handshake done
    first = event(1)
    proxy.arm("XADD")
    await bus.publish(stream, first)
    assert proxy.dropped == 1
    assert (await stored(admin, stream))[1:] == [first, first]


async def test_a_retried_plain_publish_many_appends_the_batch_twice(
    bus: RedisEventBus, proxy: LostReplyProxy, admin: aioredis.Redis, stream: str
) -> None:
    await bus.publish_many(stream, [event(0)])  # the script is loaded
    batch = [event(1), event(2), event(3)]
    proxy.arm("EVALSHA")
    await bus.publish_many(stream, batch)
    assert proxy.dropped == 1
    assert (await stored(admin, stream))[1:] == batch + batch


async def test_a_retried_idempotent_one_entry_batch_appends_once(
    bus: RedisEventBus, proxy: LostReplyProxy, admin: aioredis.Redis, stream: str
) -> None:
    proxy.arm("EVALSHA")  # the very first call: NOSCRIPT, SCRIPT LOAD, then the lost reply
    first = event(0)
    [entry_id] = await bus.publish_many(stream, [first], idempotent=True)
    assert proxy.dropped == 1
    assert await entries(admin, stream) == [(entry_id, first)]
    # A different entry goes in as usual, through the same script.
    second = event(1)
    assert (await bus.publish_many(stream, [second], idempotent=True))[0] > entry_id
    assert await stored(admin, stream) == [first, second]


async def test_a_retried_idempotent_publish_many_appends_the_batch_once(
    bus: RedisEventBus, proxy: LostReplyProxy, admin: aioredis.Redis, stream: str
) -> None:
    await bus.publish_many(stream, [event(0)], idempotent=True)
    batch = [event(1), event(2), event(3)]
    proxy.arm("EVALSHA")
    ids = await bus.publish_many(stream, batch, maxlen=1000, idempotent=True)
    assert proxy.dropped == 1
    appended = await entries(admin, stream)
    assert [fields for _, fields in appended][1:] == batch
    assert ids == [entry_id for entry_id, _ in appended][1:]  # the ids of the first append


async def test_the_worker_publisher_puts_each_event_on_the_stream_once(
    bus: RedisEventBus, proxy: LostReplyProxy, admin: aioredis.Redis, stream: str
) -> None:
    publisher = BatchingPublisher(bus, stream)  # as WorkerOutput builds it
    sent = [event(n) for n in range(50)]
    async with anyio.create_task_group() as tg:
        await tg.start(publisher.run)
        await publisher.send(sent[0])
        await publisher.flush()
        proxy.arm("EVALSHA")
        for fields in sent[1:]:
            await publisher.send(fields)
        await publisher.flush()
        tg.cancel_scope.cancel()
    assert proxy.dropped == 1
    assert await stored(admin, stream) == sent


async def test_a_client_from_url_does_not_retry_and_reports_the_lost_reply(
    proxy: LostReplyProxy, admin: aioredis.Redis, stream: str
) -> None:
    # How worker_main, bootstrap and CodeyardClient.connect build theirs: redis-py 8.1's
    # from_url has no Retry, so a lost reply is an error (the entry is there once).
    bus = RedisEventBus.from_url(proxy.url)
    try:
        await bus.publish(stream, event(0))
        proxy.arm("XADD")
        with pytest.raises(ServiceUnavailable):
            await bus.publish(stream, event(1))
        assert proxy.dropped == 1
        assert len(await stored(admin, stream)) == 2
    finally:
        await bus.aclose()
