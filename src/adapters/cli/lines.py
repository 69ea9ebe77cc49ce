"""Bytes chunks in, text lines out: the first stage of every CLI run.

Agent CLIs print one JSON object per line, but pipes deliver arbitrary chunks: a line may
arrive in pieces, several lines in one chunk, a multi-byte character split across two.
:class:`LineSplitter` turns such a stream into lines with these guarantees:

* **Chunking never matters**: any split of the same byte stream yields the same lines.
  Lines are cut on the byte ``0x0A``, which never occurs inside a multi-byte UTF-8
  sequence, and only complete lines are decoded, so a character split across chunks is
  decoded whole.
* **Decoding never raises**: invalid UTF-8 becomes U+FFFD. A trailing ``\\r`` is dropped
  (CRLF output); the ``\\n`` is never part of a line.
* **No lone surrogates**: a JSON escape of a lone UTF-16 surrogate (``"\\ud800"``; Node's
  ``JSON.stringify`` prints one for a cut emoji) would decode to a ``str`` that cannot be
  encoded, so no event holding it could be published (issue #9). Such an escape is
  rewritten to ``\\ufffd`` here, where every provider's output passes (the SSE decoder
  reads lines through this splitter too), so that no parser's JSON decoder ever makes one;
  escaped pairs (an emoji) are kept, and nothing else changes (``raw``, the line, shows
  the ``\\ufffd`` escape too).
* **Memory is bounded**: a line longer than ``max_line_bytes`` (default 8 MiB, above the
  largest single JSON event a CLI prints in practice — a big file read echoed in a tool
  result — yet small enough to hold per run) is emitted as soon as the cap is reached, cut
  to the cap at a character boundary and flagged ``truncated=True``; the rest of it, up to
  the next newline, is dropped. The run loop reports such a line as a ``RawPayload``
  (reason ``line_too_long``) instead of handing half a JSON document to the parser.
* At EOF, :meth:`LineSplitter.close` returns the last line if it had no newline.

Provider tests use :func:`split_lines` to replay recorded output under arbitrary chunking.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable

#: Default cap of one line, in bytes (see the module docstring).
DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024


class Line(str):
    """A decoded line; ``truncated`` tells that it hit the length cap and was cut."""

    truncated: bool

    def __new__(cls, text: str, *, truncated: bool = False) -> Line:
        line = super().__new__(cls, text)
        line.truncated = truncated
        return line


#: Where a lone surrogate escape may be (a cheap test first: ~0.2 ns per character).
_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")
#: An escaped backslash (consumed first, so that ``\\\\ud800`` is not an escape), an escaped
#: surrogate pair (kept) or a lone surrogate escape (group 1 unset: replaced).
_SURROGATE_ESCAPE = re.compile(
    r"(\\\\|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
)


def _keep_or_replace(match: re.Match[str]) -> str:
    return match.group(1) or "\\ufffd"


def replace_lone_surrogate_escapes(text: str) -> str:
    """``text`` with each JSON escape of a lone surrogate made ``\\ufffd`` (see above)."""
    if _MAYBE_SURROGATE.search(text) is None:
        return text
    return _SURROGATE_ESCAPE.sub(_keep_or_replace, text)


def _decode(data: bytes, *, cut: bool) -> str:
    if not cut:
        text = data.decode("utf-8", errors="replace").removesuffix("\r")
    else:
        # A cut line may end inside a multi-byte character: the incremental decoder holds
        # back that incomplete tail (final=False) instead of turning it into U+FFFD.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = decoder.decode(data, final=False)
    return replace_lone_surrogate_escapes(text)


class LineSplitter:
    """Incremental splitter of one byte stream (stdout or stderr of one run)."""

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        if max_line_bytes < 1:
            msg = "max_line_bytes must be >= 1"
            raise ValueError(msg)
        self._max = max_line_bytes
        self._buf = bytearray()
        # True while dropping the remainder of a line that hit the cap.
        self._skipping = False
        self._closed = False

    def feed(self, chunk: bytes) -> list[Line]:
        """Add a chunk; return the lines it completed (possibly none)."""
        if self._closed:
            msg = "feed() after close()"
            raise RuntimeError(msg)
        lines: list[Line] = []
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            self._append(piece, lines)
            if end < 0:
                return lines
            if self._skipping:
                self._skipping = False
            else:
                lines.append(Line(_decode(bytes(self._buf), cut=False)))
            self._buf.clear()
            start = end + 1

    def close(self) -> list[Line]:
        """End of stream: the unterminated last line, if any. Idempotent."""
        if self._closed:
            return []
        self._closed = True
        rest, skipping = bytes(self._buf), self._skipping
        self._buf.clear()
        if skipping or not rest:
            return []
        return [Line(_decode(rest, cut=False))]

    def _append(self, piece: bytes, lines: list[Line]) -> None:
        if self._skipping or not piece:
            return
        room = self._max - len(self._buf)
        if len(piece) <= room:
            self._buf += piece
            return
        self._buf += piece[:room]
        lines.append(Line(_decode(bytes(self._buf), cut=True), truncated=True))
        self._buf.clear()
        self._skipping = True


def split_lines(
    chunks: Iterable[bytes], *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> list[Line]:
    """All lines of a complete stream given as chunks (for tests and replays)."""
    splitter = LineSplitter(max_line_bytes)
    lines: list[Line] = []
    for chunk in chunks:
        lines.extend(splitter.feed(chunk))
    lines.extend(splitter.close())
    return lines
