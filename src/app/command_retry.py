"""Retrying one command entry in place: transport trouble and store outages, one back-off.

An entry left to the reclaim loop would wait ``min_idle_s`` (minutes) before anyone took
it over, so the service retries it itself, with one exponential back-off (``retry_s``
doubling up to :data:`MAX_RETRY_S`), never past ``min_idle_s / 2`` from the entry's start.
Entries in flight are kept alive, so no other manager takes one over while this one
reaches Redis; while Redis is down keep-alive fails too, and the bound settles the entry
well before a takeover could come. It also bounds how long a client waits.

- *Transport trouble*: reading the reply stream, publishing the reply or ACKing failed
  (Redis restarting). Safe to repeat (a reply already published is not made twice). When
  it outlasts the bound the entry stays pending: nothing is lost, it is reclaimed later.
- *Store outage*: the handler failed with ``ServiceUnavailable`` from a backing store
  (:func:`is_store_outage`: Postgres, Redis). The client is not told at once: the command
  runs again when the store is back, for up to ``store_outage_s`` after its first such
  failure (capped by the bound above); then it is answered ``service_unavailable`` with
  ``waited_s``. Handlers make repeating safe by being idempotent per request (the worker
  manager's create resumes what an earlier attempt made). Other errors (invalid input,
  quota, not found, an engine that is down) are answered at once.

Slots: a waiting entry keeps its handler slot. While a store is down every command that
needs it would fail anyway; a command that does not need it waits for a slot at most
until the waiting ones are answered (``store_outage_s`` plus one attempt), never forever.
Releasing the slot instead would let one process read an unbounded number of entries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeGuard

import anyio
import structlog

from codeyard.domain.errors import CodeyardError, ReplyTimeout, ServiceUnavailable

log = structlog.get_logger(__name__)

#: Longest wait between two attempts at one entry.
MAX_RETRY_S = 10.0
#: The ``service`` of a ServiceUnavailable that a command waits for (a backing store). A
#: container engine that is down is not one: a create then fails at once, as before.
STORE_SERVICES = frozenset({"postgres", "redis"})


def is_store_outage(exc: BaseException) -> TypeGuard[ServiceUnavailable]:
    """Whether ``exc`` says a backing store cannot be reached right now."""
    return (
        isinstance(exc, ServiceUnavailable)
        and not isinstance(exc, ReplyTimeout)  # a client-side wait, not a store
        and exc.fields.get("service") in STORE_SERVICES
    )


class StoreOutage(Exception):  # a signal between two functions, never sent anywhere
    """One attempt hit a store outage and the entry may wait for the store."""

    def __init__(self, cause: ServiceUnavailable, *, retry_in_s: float) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.retry_in_s = retry_in_s


@dataclass
class StoreWait:
    """How long one entry may still wait for its store, shared by its attempts."""

    #: ``store_outage_s``.
    limit_s: float
    #: The entry's hard bound (``anyio.current_time()`` scale).
    until: float
    #: The back-off before the next attempt (kept up to date by :func:`run_retrying`).
    next_delay_s: float = 0.0
    #: When the first store outage of this entry was seen.
    since: float | None = None

    def outlasted(self, exc: ServiceUnavailable) -> ServiceUnavailable:
        """Raise :class:`StoreOutage` while the entry may wait longer (the next attempt
        comes after the back-off, or at the deadline if that is sooner, so the last one
        is made at the deadline); else the error to answer with, carrying ``waited_s``."""
        now = anyio.current_time()
        if self.since is None:
            self.since = now
        left = min(self.since + self.limit_s, self.until) - now
        if left > 0:
            raise StoreOutage(exc, retry_in_s=min(self.next_delay_s, left))
        waited = round(now - self.since, 3)
        return ServiceUnavailable(
            f"{exc.message}; still failing after {waited:.1f} s",
            **{**exc.fields, "waited_s": waited},
        )


async def run_retrying(
    attempt: Callable[[StoreWait], Awaitable[None]],
    *,
    retry_s: float,
    min_idle_s: float,
    store_outage_s: float,
    entry_id: str,
) -> None:
    """Run ``attempt`` until it returns (see the module docstring). Re-raises the
    CodeyardError of transport trouble that outlasted ``min_idle_s / 2``."""
    give_up = anyio.current_time() + min_idle_s / 2
    wait = StoreWait(limit_s=store_outage_s, until=give_up)
    delay = retry_s
    while True:
        wait.next_delay_s = delay
        pause = delay
        try:
            await attempt(wait)
        except StoreOutage as exc:
            pause = exc.retry_in_s
            log.warning("command waits for its store", id=entry_id, error=str(exc), in_s=pause)
        except CodeyardError as exc:
            if anyio.current_time() + delay >= give_up:
                raise
            log.warning("command retried", id=entry_id, error=str(exc), in_s=delay)
        else:
            return
        await anyio.sleep(pause)
        delay = min(delay * 2, MAX_RETRY_S)
