"""Driver errors translated at the adapter edge.

Anything meaning "the database cannot be reached or used right now" becomes
:class:`~codeyard.domain.errors.ServiceUnavailable` (``service="postgres"``), chained with
``raise ... from exc``; a value the database refuses becomes ``InvalidRequest``. Programming
errors (bad SQL, wrong parameter types, "another operation is in progress") propagate
unchanged: retrying would not help.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg.exceptions

from codeyard.domain.errors import InvalidRequest, ServiceUnavailable

SERVICE = "postgres"

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable host, DNS failure
    TimeoutError,  # connect timeout (asyncio.TimeoutError is TimeoutError on 3.11+)
    asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08, incl. ConnectionDoesNotExist
    asyncpg.exceptions.CannotConnectNowError,  # starting up / shutting down
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)

# InterfaceError is also raised for caller mistakes; only these messages mean "gone".
_GONE_MARKERS = ("connection is closed", "pool is closed", "pool is closing", "not initialized")


@contextmanager
def translated(operation: str) -> Iterator[None]:
    """Run a block of driver calls, raising codeyard errors instead of driver errors."""
    try:
        yield
    except asyncpg.exceptions.DataError as exc:  # server-side: invalid text, out of range...
        raise InvalidRequest(
            f"postgres refused a value during {operation}", sqlstate=exc.sqlstate
        ) from exc
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        raise ServiceUnavailable(
            f"postgres unavailable during {operation}: {type(exc).__name__}: {exc}",
            service=SERVICE,
            operation=operation,
        ) from exc


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached or used right now."""
    if isinstance(exc, _UNAVAILABLE):
        return True
    if isinstance(exc, asyncpg.exceptions.InterfaceError):
        text = str(exc)
        return any(marker in text for marker in _GONE_MARKERS)
    return False
