"""BatchingPublisher: one stream's entries, in order, in as few round trips as the load needs.

The worker wrapper used to await one ``publish`` round trip per agent event, which capped
a chatty CLI at the bus' round-trip rate. Here callers hand entries to an in-process
buffer (an anyio memory object stream) and one publisher task sends whatever is buffered
with a single ``EventBus.publish_many``. There is no timer: a lone entry goes out at once
(latency), and entries that arrive while a batch is on the wire go together in the next one
(throughput), at most ``max_batch`` per call.

Guarantees:

* **Order.** One task publishes, one batch at a time, in the order :meth:`send` was called.
  Callers that stamp sequence numbers must stamp and send without an await in between, or
  under one lock, so that sequence order is send order.
* **Flush.** :meth:`flush` returns once every entry sent before it is on the stream (what
  comes before an ACK), and raises the publish error if any of them could not be.
* **Errors.** A failed ``publish_many`` ends :meth:`run` with that error (the task group
  running it fails, as an awaited ``publish`` did). That batch is not retried, and what was
  still buffered is dropped with it: a failed publish ended the turn before, too.
* **After the task.** Once :meth:`run` has ended (cancelled, or failed), or before it
  starts, :meth:`send` publishes directly and waits for it, after any entries the task
  left buffered; :meth:`flush` publishes those. Shielded cleanup code (final events on
  cancellation) therefore works the same with or without the task. A batch on the wire
  when the task was cancelled is not sent again: like a cancelled ``publish``, it most
  likely reached the bus, and sending it again would duplicate it.

* **No duplicates.** Every ``publish_many`` is ``idempotent`` (EventBus port): a
  bus client that sends a batch again after losing its reply (redis-py's ``Retry``) does
  not append it twice, so a run's ``result`` is on the stream once. This needs what the
  worker's events guarantee: no two entries of the stream are equal (each event JSON
  carries its unique id).

Single use: :meth:`run` runs once. Single event loop, like any anyio object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from codeyard.ports.event_bus import EventBus

Entry = Mapping[str, str]

#: Entries per ``publish_many``: large enough that a burst costs few round trips, small
#: enough that one batch does not hold Redis (or a reader's first page) for long.
DEFAULT_MAX_BATCH = 256
#: Entries buffered before :meth:`BatchingPublisher.send` waits (backpressure on the agent).
DEFAULT_BUFFER = 2048


class BatchingPublisher:
    """Publish one stream's entries in order, batching whatever is buffered (module doc)."""

    def __init__(
        self,
        bus: EventBus,
        stream: str,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        buffer: int = DEFAULT_BUFFER,
        maxlen: int | None = None,
    ) -> None:
        if max_batch < 1 or buffer < 1:
            msg = "max_batch and buffer must be at least 1"
            raise ValueError(msg)
        self._bus = bus
        self._stream = stream
        self._max_batch = max_batch
        self._maxlen = maxlen
        self._buffer = buffer
        #: The buffer; made by ``run`` and closed when it ends (unclosed ones warn).
        self._tx: MemoryObjectSendStream[Entry] | None = None
        self._state = "idle"  # -> "running" -> "ended"
        #: Entries handed to ``send``; entries settled (published, dropped, or cut short).
        self._sent = 0
        self._settled = 0
        #: The error that ended the task; the entries it dropped are numbers
        #: ``_failed_from + 1`` to ``_failed_upto`` in send order.
        self._failure: BaseException | None = None
        self._failed_from = self._failed_upto = 0
        #: Entries the task left buffered when cancelled; the next direct call sends them.
        self._leftover: list[Entry] = []
        self._progress = anyio.Event()
        self._direct = anyio.Lock()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The publisher task: publish buffered entries until cancelled or a publish fails."""
        if self._state != "idle":
            msg = "BatchingPublisher.run runs once"
            raise RuntimeError(msg)
        self._tx, rx = anyio.create_memory_object_stream[Entry](self._buffer)
        self._state = "running"
        task_status.started()
        try:
            while True:
                batch = [await rx.receive()]
                while len(batch) < self._max_batch:
                    try:
                        batch.append(rx.receive_nowait())
                    except anyio.WouldBlock:
                        break
                try:
                    await self._publish(batch)
                except anyio.get_cancelled_exc_class():
                    raise
                except BaseException as exc:
                    self._failure, self._failed_from = exc, self._settled
                    raise
                finally:
                    self._settled += len(batch)
                    self._notify()
        finally:
            self._end(rx)

    async def send(self, fields: Entry) -> None:
        """Queue ``fields`` for the task (waiting while the buffer is full); without a running
        task, publish them (after any leftovers) and wait for that.

        Queuing into a buffer with room does not yield to the event loop (no checkpoint):
        the events of one CLI output chunk are then all queued before the publisher task
        runs, and go out in one round trip (bench/event_path.py: batches of ~2 events
        and ~4.8k events/s with a checkpoint per send). The caller yields at its next real
        wait (the CLI's next output), so a lone event is not held back. Cancellation is
        seen at the caller's next checkpoint instead; what was queued is queued."""
        while self._state == "running" and self._tx is not None:
            try:
                self._tx.send_nowait(fields)
            except anyio.WouldBlock:
                await self._progress.wait()  # a batch went out, or the task ended
                continue
            self._sent += 1
            return
        self._sent += 1
        await self._publish_direct([fields])

    async def flush(self) -> None:
        """Return once every entry sent before this call is on the stream (after the task:
        publish the leftovers). Raises the task's publish error when the last of those
        entries was dropped by it."""
        target = self._sent
        while self._state == "running" and self._settled < target:
            await self._progress.wait()
        if self._failure is not None and self._failed_from < target <= self._failed_upto:
            raise self._failure
        if self._state == "running":
            await anyio.lowlevel.checkpoint()
        else:
            await self._publish_direct([])

    # --- internals -------------------------------------------------------------------------

    def _notify(self) -> None:
        self._progress.set()
        self._progress = anyio.Event()

    def _end(self, rx: MemoryObjectReceiveStream[Entry]) -> None:
        """The task ended: keep what is buffered for direct publication, or drop it after a
        failure. No await, so ``send`` switches to direct publication in the same step."""
        self._state = "ended"
        left: list[Entry] = []
        while True:
            try:
                left.append(rx.receive_nowait())
            except anyio.WouldBlock:
                break
        rx.close()
        if self._tx is not None:
            self._tx.close()
        if self._failure is None:
            self._leftover.extend(left)
        else:
            self._settled += len(left)
            self._failed_upto = self._sent
        self._notify()

    async def _publish_direct(self, entries: Sequence[Entry]) -> None:
        # Under a lock: two direct callers must not reorder on two bus connections.
        async with self._direct:
            batch = [*self._leftover, *entries]
            self._leftover.clear()
            try:
                for start in range(0, len(batch), self._max_batch):
                    await self._publish(batch[start : start + self._max_batch])
            finally:
                self._settled += len(batch)

    async def _publish(self, batch: Sequence[Entry]) -> None:
        await self._bus.publish_many(self._stream, batch, maxlen=self._maxlen, idempotent=True)
