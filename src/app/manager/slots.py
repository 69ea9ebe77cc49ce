"""Worker slots: at most ``max_workers`` live workers per manager; creates queue for one.

A create takes a slot before anything is built or started and waits (the creation queue,
first come first served by anyio's fair Condition) up to its timeout, then fails with
:class:`QuotaExceeded`. Slots are held per worker id, so taking one twice for the same id
(a re-delivered create, an adopted worker) counts once.
"""

from __future__ import annotations

import anyio

from codeyard.domain.errors import QuotaExceeded


class Slots:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            msg = "limit must be >= 1"
            raise ValueError(msg)
        self.limit = limit
        self._held: set[str] = set()
        self._changed = anyio.Condition()

    @property
    def used(self) -> int:
        return len(self._held)

    def holds(self, worker_id: str) -> bool:
        return worker_id in self._held

    async def acquire(self, worker_id: str, *, timeout_s: float) -> None:
        """Take a slot for ``worker_id``; QuotaExceeded after ``timeout_s`` of waiting."""
        async with self._changed:
            with anyio.move_on_after(timeout_s):
                while worker_id not in self._held and len(self._held) >= self.limit:
                    await self._changed.wait()
            if worker_id not in self._held and len(self._held) >= self.limit:
                raise QuotaExceeded(
                    "no free worker slot on this manager",
                    max_workers=self.limit,
                    waited_s=timeout_s,
                )
            self._held.add(worker_id)

    def adopt(self, worker_id: str) -> None:
        """Count a worker found running (reconciliation), even beyond the limit."""
        self._held.add(worker_id)

    async def release(self, worker_id: str) -> None:
        async with self._changed:
            if worker_id in self._held:
                self._held.discard(worker_id)
                self._changed.notify_all()
