"""Per-worker locks: the command service handles several entries at once, so commands
naming one worker (a create and its re-delivery, a delete) are serialized here. A lock
lives only while someone holds or waits for it.

The watcher's heartbeat check and the reconciler judge a worker only under its lock, taken
without waiting (:meth:`WorkerLocks.try_hold`): a worker a command is working on right now
(a resumed create building its image for longer than the heartbeat timeout) is that
command's to decide, and no command can start on it between their check and their write.
"""

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
            self._forget(worker_id, lock)

    @asynccontextmanager
    async def try_hold(self, worker_id: str) -> AsyncIterator[bool]:
        """Holds ``worker_id``'s lock if it is free now (yields ``True``); else yields
        ``False`` at once: a command on the worker is running or waiting."""
        lock = self._locks.setdefault(worker_id, anyio.Lock())
        try:
            lock.acquire_nowait()
        except anyio.WouldBlock:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()
            self._forget(worker_id, lock)

    def held(self, worker_id: str) -> bool:
        """A command on ``worker_id`` is running in this process."""
        lock = self._locks.get(worker_id)
        return lock is not None and lock.locked()

    def _forget(self, worker_id: str, lock: anyio.Lock) -> None:
        if not lock.locked() and lock.statistics().tasks_waiting == 0:
            self._locks.pop(worker_id, None)
