"""What the server saw: every request, answered or not, with how its response ended."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Outcome = Literal["pending", "completed", "disconnected", "aborted"]


@dataclass
class RecordedRequest:
    """One request. ``body`` is the parsed JSON object (``None`` when the body was empty
    or not a JSON object; ``raw_body`` keeps the bytes).

    ``dialect`` is ``None`` for paths that are not a model API (health, listings, 404s);
    ``kind`` / ``turn`` say which scripted reply answered (``main`` turn ``n``, ``side``,
    ``exhausted``). ``outcome`` is updated while streaming: ``completed`` when the whole
    response went out, ``disconnected`` when the client went away first, ``aborted`` when
    the server stopped during a stall.
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    raw_body: bytes
    body: dict[str, Any] | None
    dialect: str | None = None
    kind: str | None = None
    turn: int | None = None
    status: int | None = None
    stream: bool = False
    outcome: Outcome = "pending"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """Path and query as the client sent them (``/v1/messages?beta=true``)."""
        return f"{self.path}?{self.query}" if self.query else self.path


def decode_body(raw: bytes, content_encoding: str | None) -> dict[str, Any] | None:
    """The JSON object in ``raw`` (gzip/deflate bodies inflated), else ``None``."""
    encoding = (content_encoding or "").strip().lower()
    try:
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "deflate":
            raw = zlib.decompress(raw)
        value = json.loads(raw) if raw else None
    except (OSError, EOFError, zlib.error, ValueError):
        # A malformed body is recorded as such; the handler answers 400.
        return None
    return value if isinstance(value, dict) else None
