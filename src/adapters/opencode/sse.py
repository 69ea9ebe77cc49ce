"""Server-sent events from raw bytes, with bounded memory: :class:`SseDecoder`.

Buffer choice. httpx carries the stream (``response.aiter_bytes()``); the bytes are cut
into lines by codeyard's :class:`~codeyard.adapters.cli.lines.LineSplitter` and each line
interpreted by the SSE field rules (``data``/``id``/``event``, ``:`` comments, a blank line
dispatches; ``retry`` is ignored: reconnecting is the agent's decision). httpx-sse's
``EventSource.aiter_sse`` is NOT used for this stream: its line reader buffers an
unterminated line without any limit (a server that never sends a newline would grow our
memory forever), and its field decoder is private API (``httpx_sse._decoders``); the dozen
lines of field rules below are cheaper than depending on either.

* **Max event size**: one line is capped at ``max_event_bytes`` (default 8 MiB, the run
  loop's line cap: OpenCode sends each event as ONE ``data:`` line, and its largest — a
  tool part echoing a big file — fits well below). A longer line is cut there and the rest
  dropped; that event is reported as truncated instead of being half-parsed. Data split
  over several ``data:`` lines is capped the same way in total.
* **Chunking never matters**: lines are cut on byte ``0x0A`` before decoding, so any split
  of the byte stream yields the same events (the unit tests check this with hypothesis).
* **Line ends**: ``\\n`` and ``\\r\\n`` (OpenCode's). A lone ``\\r``, which the SSE spec also
  allows as a line end, is not treated as one.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import httpx

from codeyard.adapters.cli.lines import DEFAULT_MAX_LINE_BYTES, Line, LineSplitter


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event: ``data`` (lines joined by ``\\n``), the ``id`` in effect
    (SSE keeps the last one across events; OpenCode sends none) and whether a line of it
    hit the size cap (``data`` is then incomplete and must not be parsed)."""

    data: str
    event: str = ""
    id: str = ""
    truncated: bool = False


class SseDecoder:
    """Incremental: :meth:`feed` bytes as they arrive, :meth:`close` at the end."""

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._max = max_event_bytes
        self._lines = LineSplitter(max_event_bytes)
        self._size = 0
        self._truncated = False
        self._data: list[str] = []
        self._event = ""
        self._id = ""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        return self._take(self._lines.feed(chunk))

    def close(self) -> list[SseEvent]:
        """End of stream: a last event without its blank line is incomplete, dropped (the
        SSE spec discards it too)."""
        self._take(self._lines.close())
        return []

    def _take(self, lines: list[Line]) -> list[SseEvent]:
        events: list[SseEvent] = []
        for line in lines:
            if not line:
                if self._data or self._event:
                    data = "\n".join(self._data)
                    events.append(SseEvent(data, self._event, self._id, self._truncated))
                self._data, self._event, self._size, self._truncated = [], "", 0, False
                continue
            if line.startswith(":"):
                continue  # a comment (keep-alive)
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._size += len(value)
                if line.truncated or self._size > self._max:
                    self._truncated = True
                    value = ""
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id" and "\x00" not in value:
                self._id = value  # kept across events, as the spec says
        return events


def decode_all(
    chunks: list[bytes], max_event_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> list[SseEvent]:
    """Every event of a complete byte stream (for tests and replays)."""
    decoder = SseDecoder(max_event_bytes)
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


class EventStream:
    """An open ``GET /event`` response, read chunk by chunk into events."""

    def __init__(self, response: httpx.Response, max_event_bytes: int) -> None:
        self._response = response
        self._chunks = response.aiter_bytes()
        self._decoder = SseDecoder(max_event_bytes)
        #: Events read while waiting for ``server.connected``, not yet handed out.
        self.pending: list[SseEvent] = []

    async def read(self) -> list[SseEvent] | None:
        """The events of the next chunk; ``None`` at the end of the stream or when it
        broke (any failure of the connection means the same: subscribe again)."""
        if self.pending:
            events, self.pending = self.pending, []
            return events
        try:
            return self._decoder.feed(await self._chunks.__anext__())
        except Exception:  # StopAsyncIteration, httpx transport/stream errors...
            return None

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
            await self._response.aclose()
