"""Reading a ``docker exec`` socket: Docker's multiplexed stream, demultiplexed by hand.

Docker frames non-TTY exec output as ``[type, 0, 0, 0, size (4 bytes, big-endian)]`` then
``size`` bytes, with type 1 = stdout, 2 = stderr. :class:`ExecStream` reads the socket in
non-blocking mode after ``anyio.wait_readable`` (no thread is parked on a silent process),
splits frames and queues payloads per stream. Both chunk iterators share the socket:
whichever needs data reads, the other waits for that read to finish and looks again.
Cancelling a pending ``__anext__`` loses nothing: bytes go to the queues before any await.

The first stderr line is the launcher's marker (see ``exec_launcher``): it is taken out of
the stderr stream and exposed through :meth:`ExecStream.read_marker`.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import ssl
from typing import Any

import anyio

_HEADER = 8
_READ_SIZE = 65536
#: A marker line longer than this is not a marker: give up looking for it.
_MARKER_MAX = 4096


class ExecStream:
    class Chunks:
        """Cancel-safe async iterator over one of the two streams."""

        def __init__(self, stream: ExecStream, kind: int) -> None:
            self._stream = stream
            self._kind = kind

        def __aiter__(self) -> ExecStream.Chunks:
            return self

        async def __anext__(self) -> bytes:
            return await self._stream.next_chunk(self._kind)

    def __init__(self, sock: socket.socket, *, marker: str, owner: Any = None) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._owner = owner  # docker-py's wrapper: closing it on GC would close the socket
        self._marker_prefix = marker.encode()
        self._buf = bytearray()
        self._queues: dict[int, collections.deque[bytes]] = {
            1: collections.deque(),
            2: collections.deque(),
        }
        self._head = bytearray()  # stderr before the marker line is complete
        self._marker_done = False
        self._marker: str | None = None
        #: Text that came before (instead of) the marker: Docker's own start errors.
        self.preamble = ""
        self._eof = False
        self._reading = False
        self._progress = anyio.Event()
        self._claimed: set[int] = set()
        self._closed = False

    @property
    def eof(self) -> bool:
        return self._eof

    def chunks(self, kind: int) -> ExecStream.Chunks:
        if kind in self._claimed:
            msg = "each output stream may be iterated once"
            raise RuntimeError(msg)
        self._claimed.add(kind)
        return ExecStream.Chunks(self, kind)

    async def read_marker(self) -> str | None:
        """The marker's value (``pgid=12``...), or ``None`` if the stream ended first."""
        while not self._marker_done and not self._eof:
            await self._read_shared()
        return self._marker

    async def next_chunk(self, kind: int) -> bytes:
        queue = self._queues[kind]
        while True:
            if queue:
                return queue.popleft()
            if self._eof:
                raise StopAsyncIteration
            await self._read_shared()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._eof = True
        # Wakes a task parked in wait_readable on this socket (it gets ClosedResourceError).
        anyio.notify_closing(self._sock)
        self._sock.close()
        if self._owner is not None:
            with contextlib.suppress(OSError):
                self._owner.close()

    # --- internals -------------------------------------------------------------------------

    async def _read_shared(self) -> None:
        if self._reading:
            await self._progress.wait()
            return
        self._reading = True
        try:
            await self._read_once()
        finally:
            self._reading = False
            progress, self._progress = self._progress, anyio.Event()
            progress.set()

    async def _read_once(self) -> None:
        if self._closed:
            self._eof = True
            return
        pending = isinstance(self._sock, ssl.SSLSocket) and self._sock.pending()
        if not pending:
            try:
                await anyio.wait_readable(self._sock)
            except (anyio.ClosedResourceError, OSError):
                self._eof = True
                return
        try:
            data = self._sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            return
        except OSError:
            data = b""  # reset or closed: the end of the stream
        if not data:
            self._eof = True
            self._finish_marker()
            return
        self._buf += data
        self._demux()

    def _demux(self) -> None:
        buf = self._buf
        while len(buf) >= _HEADER:
            kind, size = buf[0], int.from_bytes(buf[4:8], "big")
            if kind not in (0, 1, 2) or buf[1:4] != b"\0\0\0":
                # Not framed: Docker's plain-text error for an exec that could not start.
                self.preamble += bytes(buf).decode("utf-8", errors="replace")
                buf.clear()
                return
            if len(buf) < _HEADER + size:
                return
            payload = bytes(buf[_HEADER : _HEADER + size])
            del buf[: _HEADER + size]
            if kind == 2 and not self._marker_done:
                self._take_head(payload)
            elif kind in self._queues and payload:
                self._queues[kind].append(payload)

    def _take_head(self, payload: bytes) -> None:
        self._head += payload
        newline = self._head.find(b"\n")
        if newline < 0 and len(self._head) <= _MARKER_MAX:
            return
        line = bytes(self._head[:newline]) if newline >= 0 else b""
        if line.startswith(self._marker_prefix):
            self._marker = line[len(self._marker_prefix) :].decode("ascii", errors="replace")
            rest = bytes(self._head[newline + 1 :])
        else:
            rest = bytes(self._head)
            self.preamble += rest.decode("utf-8", errors="replace")
        self._marker_done = True
        self._head.clear()
        if rest:
            self._queues[2].append(rest)

    def _finish_marker(self) -> None:
        if not self._marker_done:
            self.preamble += bytes(self._head).decode("utf-8", errors="replace")
            self._marker_done = True
