"""Driver errors and raw stream replies of
:class:`~codeyard.adapters.redis.event_bus.RedisEventBus` (see its module docstring for
how errors are translated)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.exceptions as rexc

from codeyard.domain.errors import (
    CodeyardError,
    Conflict,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
)
from codeyard.domain.streams import StreamMessage

# redis-py strips the "ERR " prefix: argument errors are recognised by their wording.
_BAD_ARGUMENT_HINTS = ("invalid", "syntax error", "not an integer", "out of range", "must be")


@contextmanager
def translated(op: str, stream: str) -> Iterator[None]:
    """Turn driver errors into codeyard errors; the driver's stays as ``__cause__``."""
    try:
        yield
    except (rexc.ConnectionError, rexc.TimeoutError, TimeoutError) as exc:
        raise ServiceUnavailable(
            f"redis unreachable during {op}", service="redis", op=op, stream=stream
        ) from exc
    except rexc.ResponseError as exc:
        text = str(exc)
        kind = text.split(" ", 1)[0]
        fields = {"op": op, "stream": stream, "reply": text}
        if kind == "NOGROUP":
            raise NotFound("no such stream or consumer group", **fields) from exc
        if kind == "WRONGTYPE":
            raise Conflict("key holds a value that is not a stream", **fields) from exc
        if isinstance(exc, rexc.ReadOnlyError | rexc.OutOfMemoryError) or kind == "BUSY":
            raise ServiceUnavailable("redis refused the write", service="redis", **fields) from exc
        if any(hint in text.lower() for hint in _BAD_ARGUMENT_HINTS):
            raise InvalidInput("redis rejected the arguments", **fields) from exc
        raise CodeyardError("redis replied with an error", **fields) from exc
    except rexc.DataError as exc:
        raise InvalidInput(str(exc), op=op, stream=stream) from exc
    except rexc.RedisError as exc:
        raise CodeyardError(f"redis error during {op}", op=op, stream=stream) from exc


def positive(value: int, what: str) -> int:
    if value < 1:
        raise InvalidInput(f"{what} must be at least 1", value=value)
    return value


def parse_entries(stream: str, raw: Any, deliveries: int) -> list[StreamMessage]:
    """``[[id, [k, v, ...]], ...]`` (raw RESP) -> messages; nil entries are skipped."""
    out: list[StreamMessage] = []
    for item in raw or ():
        if not item or item[1] is None:
            continue
        flat = list(item[1])
        fields = {str(k): str(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
        out.append(
            StreamMessage(stream=stream, id=str(item[0]), fields=fields, deliveries=deliveries)
        )
    return out


def read_reply(stream: str, reply: Any, deliveries: int) -> list[StreamMessage]:
    """Raw XREAD/XREADGROUP reply: nil, RESP2 ``[[key, entries]]`` or RESP3 ``{key: entries}``."""
    if not reply:
        return []
    pairs = reply.items() if isinstance(reply, dict) else reply
    return [
        m
        for key, raw in pairs
        if str(key) == stream
        for m in parse_entries(stream, raw, deliveries)
    ]
