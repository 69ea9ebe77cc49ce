"""Per-worker locks: the command service handles several entries at once, so commands
naming one worker (a create and its re-delivery, a delete) are serialized here. A lock
lives only while someone holds or waits for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio


class WorkerLocks:
    def __init__(self) -> None:
        self._locks: dict[str, anyio.Lock] = {}

    @asynccontextmanager
    async def hold(self, worker_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(worker_id, anyio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(worker_id, None)
