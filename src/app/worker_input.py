"""WorkerInbox: how a worker wrapper takes entries from ``worker:{id}:input``.

* **Delivery.** Input is read through the consumer group ``worker`` so a restarted wrapper
  does not replay handled entries; entries left pending by a crashed predecessor are
  claimed first, in id order (:meth:`WorkerInbox.leftovers`: at-least-once per prompt).
* **Done** (:meth:`WorkerInbox.done`): the wrapper calls it once an entry's terminal event
  is on the output stream; the entry is ACKed, then deleted (``XDEL``). Prompts are the
  clients' own text and may hold whatever they typed: deleting them keeps them from
  piling up in Redis (the per-worker ACL allows ``XDEL`` on the worker's own keys only).
  ACK first: an entry deleted while still pending would be reported as deleted by the
  next claim instead of being run again.
"""

from __future__ import annotations

from codeyard.domain.streams import StreamMessage, parse_stream_id, worker_input_stream
from codeyard.ports.event_bus import EventBus

INPUT_GROUP = "worker"


class WorkerInbox:
    """One worker's input stream, read as consumer ``consumer`` of :data:`INPUT_GROUP`."""

    def __init__(self, bus: EventBus, worker_id: str, *, consumer: str, poll_s: float) -> None:
        self._bus = bus
        self.stream = worker_input_stream(worker_id)
        self._consumer = consumer
        self._poll_s = poll_s

    async def open(self) -> None:
        """Create the consumer group (and the stream) when missing."""
        await self._bus.ensure_group(self.stream, INPUT_GROUP)

    async def leftovers(self) -> list[StreamMessage]:
        """Entries a crashed predecessor took but never finished (not ACKed)."""
        found: list[StreamMessage] = []
        cursor = "0-0"
        while True:
            page = await self._bus.claim_stale(
                self.stream, INPUT_GROUP, self._consumer, min_idle_s=0.0, cursor=cursor
            )
            found.extend(page.messages)
            cursor = page.cursor
            if cursor == "0-0":
                return sorted(found, key=lambda m: parse_stream_id(m.id))

    async def next(self) -> list[StreamMessage]:
        """New entries (one at a time), waiting up to ``poll_s`` for one."""
        return await self._bus.read_group(
            self.stream, INPUT_GROUP, self._consumer, count=1, block_s=self._poll_s
        )

    async def done(self, entry_id: str) -> None:
        """ACK ``entry_id``, then delete it (module doc)."""
        await self._bus.ack(self.stream, INPUT_GROUP, [entry_id])
        await self._bus.delete_entries(self.stream, [entry_id])
