"""A superuser connection to the test cluster, usable from synchronous fixtures."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import asyncpg

from tests.services.common import ServiceStartError

_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class AdminConnection:
    """One asyncpg connection, driven from synchronous code.

    Fixtures are synchronous but may be set up while an event loop runs (an async fixture
    calling ``request.getfixturevalue``), where ``asyncio.run`` is refused. So the
    connection lives on a private event loop in a daemon thread, and :meth:`execute` blocks
    its caller until the statement is done. A lost connection is re-opened on the next call.
    """

    def __init__(self, dsn: str, timeout: float = 60.0) -> None:
        self._dsn = dsn
        self._timeout = timeout
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="codeyard-pg-admin", daemon=True
        )
        self._thread.start()

    def execute(self, sql: str) -> None:
        with self._lock:
            future = asyncio.run_coroutine_threadsafe(self._execute(sql), self._loop)
            try:
                future.result(self._timeout)
            except TimeoutError:
                future.cancel()
                raise ServiceStartError(f"{sql!r} timed out after {self._timeout} s") from None
            except _ERRORS as exc:
                raise ServiceStartError(f"{sql!r} failed: {exc}") from exc

    async def _execute(self, sql: str) -> None:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn, timeout=5)
        await self._conn.execute(sql)

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5)
            except (*_ERRORS, TimeoutError):
                conn.terminate()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        with self._lock, contextlib.suppress(TimeoutError):
            asyncio.run_coroutine_threadsafe(self._disconnect(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()
