"""EventBus: append-only streams with consumer groups (Redis streams in production)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from codeyard.domain.streams import PendingPage, StreamMessage


@runtime_checkable
class EventBus(Protocol):
    """The control plane's transport: ``worker:commands``, per-worker input/output streams
    and reply streams.

    Contract:
    - ``publish`` appends and returns the entry id; ids strictly increase per stream.
      ``maxlen`` trims approximately-oldest entries but never below ``maxlen`` entries.
    - ``publish_many`` appends its entries in order, in one step: one round trip, and no
      other publisher's entry lands between them (all or none are appended, barring a
      transport failure after the append); the ids it returns strictly increase, like those
      of as many ``publish`` calls. Empty ``entries`` return ``[]`` without a round trip.
    - ``publish_many(..., idempotent=True)``: the caller promises that no
      two entries it publishes on ``stream`` have equal fields (say, each carries a unique
      event id). A call whose last entry equals the stream's newest entry appends nothing
      and returns the ids of the stream's newest ``len(entries)`` entries: a transport
      that sends the call again after its reply was lost (redis-py's ``Retry``) does not
      append it twice. Only the newest entry is compared: an entry another publisher
      appended in between makes the repeat append again (readers drop repeated events).
    - ``read`` returns entries with id > ``after`` in order, at most ``count``, waiting up
      to ``block_s`` for the first one when none is there (``None`` or ``<= 0``: do not
      wait — unlike Redis' ``BLOCK 0``, which waits forever).
    - Consumer groups: ``ensure_group`` is idempotent (creates the stream when missing).
      ``read_group`` delivers new entries to one consumer each and keeps them pending until
      ``ack``. ``claim_stale`` transfers entries pending longer than ``min_idle_s`` to the
      caller, paging with ``cursor`` ("0-0" to start; the page's cursor "0-0" means done),
      and counts a delivery for each.
    - ``keep_alive`` says ``consumer`` is still working on ``ids``: each of them pending on
      ``consumer`` whose entry is still in the stream gets its idle time reset to 0, so
      ``claim_stale`` leaves it alone for another ``min_idle_s``, and *no* delivery is
      counted (a slow consumer is not a crashed one: only a real takeover counts). Returns
      those ids, in the given order. Ids pending on another consumer (already taken over),
      acked, unknown or deleted from the stream are left as they are and not returned (a
      deleted one stays pending until ``claim_stale`` reports it). Empty ``ids`` return
      ``[]`` without a round trip; otherwise a missing stream or group raises ``NotFound``
      and a malformed id ``InvalidInput``. Repeating a call is harmless.
    - ``read_group``, ``claim_stale`` and ``pending_count`` on a missing stream or group
      raise ``NotFound``; ``ack`` of an unknown or already-acked id (or a missing group) is
      a no-op and returns how many were acked. Empty ``fields`` or a ``count``/``maxlen``
      below 1 raise ``InvalidInput``.
    - ``trim_acked`` removes only entries every consumer group is done with: at or before
      each group's last-delivered id and not pending in any group (entries a group skipped,
      created after them, count as done). It never removes a pending or undelivered entry,
      nor one published concurrently, and never changes the ids of the entries it keeps.
    - ``delete_entries`` removes the entries with the given ids wherever they are in the
      stream (Redis ``XDEL``) and returns how many it removed: unknown ids, ids already
      removed and a missing stream count 0, empty ``ids`` return 0 without a round trip,
      a malformed id raises ``InvalidInput``. ``read``/``read_group``/``length`` no longer
      see them; other entries keep their ids and new ids keep growing past the removed
      ones. It does not touch consumer groups: a removed entry still pending in a group
      stays pending until ``claim_stale`` reports it in ``deleted_ids`` (ack first).
    - Cancelling ``read``/``read_group`` while blocked loses no entry: an entry is either
      returned or still unread/pending.
    - Transport unreachable: ``ServiceUnavailable(service=...)``.
    """

    async def publish(
        self,
        stream: str,
        fields: Mapping[str, str],
        *,
        maxlen: int | None = None,
    ) -> str:
        """Append an entry; returns its id (not repeat-safe: see ``publish_many``)."""
        ...

    async def publish_many(
        self,
        stream: str,
        entries: Sequence[Mapping[str, str]],
        *,
        maxlen: int | None = None,
        idempotent: bool = False,
    ) -> list[str]:
        """Append ``entries`` in order in one step (see the contract); returns their ids.
        Any empty ``fields`` among them raises ``InvalidInput`` before anything is sent."""
        ...

    async def read(
        self, stream: str, *, after: str = "0-0", count: int = 100, block_s: float | None = None
    ) -> list[StreamMessage]:
        """Entries after ``after`` (exclusive)."""
        ...

    async def ensure_group(self, stream: str, group: str, *, start: str = "0-0") -> None:
        """Create the consumer group if missing (and the stream)."""
        ...

    async def read_group(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        count: int = 10,
        block_s: float | None = None,
    ) -> list[StreamMessage]:
        """New entries for this consumer; they stay pending until acked."""
        ...

    async def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        """Acknowledge entries; returns how many were pending."""
        ...

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
        """Take over entries other consumers left pending too long."""
        ...

    async def keep_alive(
        self, stream: str, group: str, consumer: str, ids: Sequence[str]
    ) -> list[str]:
        """Reset the idle time of ``consumer``'s pending ``ids`` without counting a
        delivery (see the contract); returns the ids it reset."""
        ...

    async def pending_count(self, stream: str, group: str) -> int:
        """Entries delivered to the group but not acked."""
        ...

    async def trim_acked(self, stream: str, group: str) -> int:
        """Remove the entries of ``stream`` that ``group`` has delivered and every consumer
        has acknowledged; never a pending or undelivered one. Returns how many were removed
        (0 for a missing stream/group). With several groups on the stream, an entry goes only
        once every group is done with it (the minimum over all groups)."""
        ...

    async def delete_entries(self, stream: str, ids: Sequence[str]) -> int:
        """Remove the entries ``ids`` (see the contract); returns how many existed."""
        ...

    async def length(self, stream: str) -> int:
        """Entries in the stream (0 when missing)."""
        ...

    async def delete_stream(self, stream: str) -> None:
        """Remove a stream and its groups. Idempotent."""
        ...
