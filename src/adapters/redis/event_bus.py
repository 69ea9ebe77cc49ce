"""RedisEventBus: the EventBus port on Redis streams (``redis.asyncio``, Redis >= 7.0).

Design notes:

- The client is passed in (entry points open it; nothing connects at import or in the
  constructor). It must use ``decode_responses=True``. :meth:`RedisEventBus.from_url`
  builds one without connecting.
- ``XREAD``/``XREADGROUP`` run on a connection taken from the client's pool for the one
  command, not through ``execute_command``: (1) a blocking read needs a read deadline
  longer than ``BLOCK`` (the client's ``socket_timeout``, 5 s by default in redis-py 8,
  would cut it short), so the deadline here is ``block_s + socket_timeout``; (2) when the
  read is cancelled, the socket is closed *and the close awaited* before the cancellation
  propagates (redis-py only starts the close), so the server sees the blocked client go
  before any later command from this process can reach it. Otherwise an entry published
  right after the cancel could in principle be handed to the dead read and stay pending
  on that consumer (still "not lost" per the port, but only ``claim_stale`` would find it).
  The connection is reused normally otherwise; a read that fails with a Redis error reply
  keeps it.
- Delivery counts: ``read`` reports 0 (no group); ``read_group`` reports 1 (``XREADGROUP >``
  only returns never-delivered entries); ``claim_stale`` runs ``XAUTOCLAIM`` and, in the
  same Lua script (so atomically), ``XPENDING key group id id 1`` per claimed entry, and
  reports that count (already including the delivery the claim made). ``keep_alive`` is
  ``XCLAIM ... JUSTID`` (no delivery counted) of the caller's own pending entries, also
  in a script (:mod:`.stream_scripts` says why).
- ``block_s`` <= 0 means "do not wait" (Redis' ``BLOCK 0`` would wait forever).
- Lost replies: a client with a redis-py ``Retry`` (``Redis(...)``'s default; not
  ``Redis.from_url``'s in redis-py 8.1, which retries nothing) sends a command again
  after a connection error, also when Redis had applied it and only the reply was lost
  (tests/integration/test_event_bus_lost_reply.py). ``idempotent`` batches are safe to
  repeat: the ``publish_many`` script compares the stream's newest entry with the batch's
  last one and appends nothing when they are equal (:mod:`.stream_scripts`). It reads
  with ``XREVRANGE``, which a worker's ACL allows for that reason (Redis 7.0 has no
  other command that reads a stream's newest entry). Plain publishes are not repeat-safe.
- Errors are translated at this edge (:mod:`.stream_replies`): connection and timeout
  errors become ``ServiceUnavailable(service="redis")``, ``NOGROUP`` becomes ``NotFound``,
  a wrong key type ``Conflict``, a bad id or argument ``InvalidInput``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import anyio
import anyio.lowlevel
import redis.asyncio as aioredis
import redis.exceptions as rexc

from codeyard.adapters.redis.stream_replies import parse_entries, positive, read_reply, translated
from codeyard.adapters.redis.stream_scripts import (
    CLAIM_SCRIPT,
    KEEP_ALIVE_SCRIPT,
    PUBLISH_MANY_SCRIPT,
    TRIM_SCRIPT,
)
from codeyard.domain.errors import InvalidInput
from codeyard.domain.streams import PendingPage, StreamMessage


class RedisEventBus:
    """The EventBus port on Redis streams; see the module docstring."""

    def __init__(self, client: aioredis.Redis) -> None:
        kwargs = client.connection_pool.connection_kwargs
        if not kwargs.get("decode_responses"):
            raise InvalidInput("RedisEventBus needs a client with decode_responses=True")
        self._redis = client
        self._claim = client.register_script(CLAIM_SCRIPT)
        self._keep_alive = client.register_script(KEEP_ALIVE_SCRIPT)
        self._trim = client.register_script(TRIM_SCRIPT)
        self._publish_many = client.register_script(PUBLISH_MANY_SCRIPT)

    @classmethod
    def from_url(cls, url: str, **client_kwargs: Any) -> RedisEventBus:
        """A bus on a new client for ``url``; connects lazily, on the first command."""
        client_kwargs["decode_responses"] = True
        return cls(aioredis.Redis.from_url(url, **client_kwargs))

    async def aclose(self) -> None:
        """Close the client (and its pool)."""
        await self._redis.aclose()

    # --- plain streams ---------------------------------------------------------------------

    async def publish(
        self,
        stream: str,
        fields: Mapping[str, str],
        *,
        maxlen: int | None = None,
    ) -> str:
        """Plain ``XADD``, not repeat-safe (``publish_many(..., idempotent=True)`` is)."""
        if not fields:
            raise InvalidInput("a stream entry needs at least one field", stream=stream)
        if maxlen is not None:
            positive(maxlen, "maxlen")
        payload: dict[Any, Any] = dict(fields)
        with translated("publish", stream):
            entry_id = await self._redis.xadd(stream, payload, maxlen=maxlen, approximate=True)
        return str(entry_id)

    async def publish_many(
        self,
        stream: str,
        entries: Sequence[Mapping[str, str]],
        *,
        maxlen: int | None = None,
        idempotent: bool = False,
    ) -> list[str]:
        """All the ``XADD`` calls in one Lua script call: one round trip, run atomically, in order
        (so ids strictly increase and no other publisher's entry lands between them). Not a
        plain pipeline, which keeps order but lets other clients interleave and, on a
        refusal or a dropped connection, leaves an unknown part appended; not ``MULTI``,
        which has the script's guarantees but costs redis-py a packed command and a parsed
        reply per entry (plus one ``QUEUED`` each), about twice the client CPU of one
        script call whose arguments are the entries (measured: ~37 vs ~19 us per 1.7 kB
        entry). The ``#!lua`` shebang makes Redis refuse the whole script up front when it
        is out of memory or a read-only replica, as ``MULTI`` would.

        ``idempotent``: the script first compares the stream's newest entry with the batch's
        last one (``XREVRANGE ... COUNT 1``, in the same atomic step) and appends nothing
        when they are equal, so a client that sends the call again after a lost reply (a
        redis-py ``Retry``) does not append the batch twice. All or none of a batch is
        ever appended, so its last entry being the newest means all of it is there."""
        if any(not fields for fields in entries):
            raise InvalidInput("a stream entry needs at least one field", stream=stream)
        if maxlen is not None:
            positive(maxlen, "maxlen")
        if not entries:
            await anyio.lowlevel.checkpoint()
            return []
        args: list[str | int] = ["" if maxlen is None else maxlen, "1" if idempotent else ""]
        for fields in entries:
            args.append(len(fields))
            for key, value in fields.items():
                args += (key, value)
        with translated("publish_many", stream):
            ids = await self._publish_many(keys=[stream], args=args)
        return [str(entry_id) for entry_id in cast(list[Any], ids)]

    async def read(
        self, stream: str, *, after: str = "0-0", count: int = 100, block_s: float | None = None
    ) -> list[StreamMessage]:
        args: list[str | int] = ["XREAD", "COUNT", positive(count, "count")]
        return await self._read("read", stream, args, after, block_s, deliveries=0)

    async def length(self, stream: str) -> int:
        with translated("length", stream):
            return int(await self._redis.xlen(stream))

    async def delete_entries(self, stream: str, ids: Sequence[str]) -> int:
        if not ids:
            await anyio.lowlevel.checkpoint()
            return 0
        with translated("delete_entries", stream):
            return int(await self._redis.xdel(stream, *ids))

    async def delete_stream(self, stream: str) -> None:
        with translated("delete_stream", stream):
            await self._redis.delete(stream)

    # --- consumer groups -------------------------------------------------------------------

    async def ensure_group(self, stream: str, group: str, *, start: str = "0-0") -> None:
        with translated("ensure_group", stream):
            try:
                await self._redis.xgroup_create(stream, group, id=start, mkstream=True)
            except rexc.ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int = 10,
        block_s: float | None = None,
    ) -> list[StreamMessage]:
        args: list[str | int] = ["XREADGROUP", "GROUP", group, consumer]
        args += ["COUNT", positive(count, "count")]
        return await self._read("read_group", stream, args, ">", block_s, deliveries=1)

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        with translated("ack", stream):
            return int(await self._redis.xack(stream, group, *ids))

    async def claim_stale(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        min_idle_s: float,
        cursor: str = "0-0",
        count: int = 100,
    ) -> PendingPage:
        positive(count, "count")
        if min_idle_s < 0:
            raise InvalidInput("min_idle_s must not be negative", value=min_idle_s)
        min_idle_ms = round(min_idle_s * 1000)
        with translated("claim_stale", stream):
            reply = await self._claim(
                keys=[stream], args=[group, consumer, min_idle_ms, cursor, count]
            )
        next_cursor, raw_entries, deleted, counts = cast(list[Any], reply)
        messages = parse_entries(stream, raw_entries, deliveries=0)
        by_id = {str(item[0]): int(n) for item, n in zip(raw_entries, counts, strict=True) if item}
        return PendingPage(
            cursor=str(next_cursor),
            messages=tuple(m.model_copy(update={"deliveries": by_id[m.id]}) for m in messages),
            deleted_ids=tuple(str(i) for i in deleted or ()),
        )

    async def keep_alive(
        self, stream: str, group: str, consumer: str, ids: Sequence[str]
    ) -> list[str]:
        if not ids:
            await anyio.lowlevel.checkpoint()
            return []
        with translated("keep_alive", stream):
            kept = await self._keep_alive(keys=[stream], args=[group, consumer, *ids])
        return [str(entry_id) for entry_id in cast(list[Any], kept)]

    async def pending_count(self, stream: str, group: str) -> int:
        with translated("pending_count", stream):
            summary = await self._redis.xpending(stream, group)
        return int(summary["pending"])

    async def trim_acked(self, stream: str, group: str) -> int:
        """See the port. Exact ``XTRIM MINID`` (not ``~``), so that exactly the finished
        entries go: it costs O(removed entries) and may rewrite a partly freed radix-tree
        node, where ``~`` only drops whole nodes; callers bound the cost by trimming often
        (the script also reads XINFO GROUPS and, per group, the XPENDING summary)."""
        with translated("trim_acked", stream):
            removed = await self._trim(keys=[stream], args=[group])
        return int(cast(int, removed))

    # --- internals -------------------------------------------------------------------------

    async def _read(
        self,
        op: str,
        stream: str,
        args: list[str | int],
        after: str,
        block_s: float | None,
        *,
        deliveries: int,
    ) -> list[StreamMessage]:
        """XREAD/XREADGROUP on a connection of our own; see the module docstring."""
        block_ms = math.ceil(block_s * 1000) if block_s is not None and block_s > 0 else 0
        if block_ms:
            args += ["BLOCK", block_ms]
        args += ["STREAMS", stream, after]
        pool = self._redis.connection_pool
        with translated(op, stream):
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                socket_timeout = conn.socket_timeout
                limit = None if socket_timeout is None else socket_timeout + block_ms / 1000
                try:
                    await conn.send_command(*args)
                    with anyio.fail_after(limit):
                        reply = await conn.read_response(
                            timeout=math.inf, disconnect_on_error=False
                        )
                except rexc.ResponseError:
                    raise  # a complete error reply: the connection is still in sync
                except BaseException:
                    # Closed and awaited even when cancelled: see the module docstring.
                    with anyio.CancelScope(shield=True):
                        await conn.disconnect()
                    raise
            finally:
                with anyio.CancelScope(shield=True):
                    await pool.release(conn)
        return read_reply(stream, reply, deliveries)
