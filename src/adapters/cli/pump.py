"""Waiting on a running CLI: its two pipes, its exit, a cancel request and a timer at once.

The run loop is an async generator, and a task group must never stay open across a
``yield`` (the consumer's code would run inside the generator's cancel scope: a consumer's
own timeout could then not unwind cleanly). So instead of long-lived reader tasks,
:meth:`Pump.next` opens a short task group for ONE wait: it races one read of each open
pipe, the exit of the leader, the cancel event and a deadline, and returns everything that
finished. The losers are cancelled, which requires the launcher's chunk iterators and
``wait`` to be cancel-safe (a cancelled ``__anext__`` loses no bytes and the iterator stays
usable) — true of the launchers in ``codeyard.adapters.process`` and
``codeyard.adapters.docker``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

import anyio

from codeyard.ports.process_launcher import ProcessHandle

Stream = Literal["stdout", "stderr"]


@dataclass
class Inputs:
    """What one :meth:`Pump.next` observed (several things may finish together)."""

    chunks: list[tuple[Stream, bytes]] = field(default_factory=list)
    ended: list[Stream] = field(default_factory=list)
    exited: bool = False
    cancel_requested: bool = False
    timer: bool = False
    #: Failures of the launcher's streams or ``wait`` (the stream is then treated as ended).
    errors: list[str] = field(default_factory=list)


class Pump:
    """Multiplexes one :class:`ProcessHandle` (iterates each of its pipes exactly once)."""

    def __init__(self, handle: ProcessHandle) -> None:
        self._handle = handle
        self._streams: dict[Stream, AsyncIterator[bytes]] = {
            "stdout": handle.stdout_chunks(),
            "stderr": handle.stderr_chunks(),
        }
        self.exited = False
        self.exit_code: int | None = None

    @property
    def pipes_open(self) -> bool:
        return bool(self._streams)

    @property
    def finished(self) -> bool:
        """Both pipes at EOF and the leader's exit observed."""
        return not self._streams and self.exited

    async def next(self, until: float, cancel: anyio.Event | None = None) -> Inputs:
        """Wait until output, EOF, exit, ``cancel`` or the clock reaching ``until``."""
        got = Inputs()
        async with anyio.create_task_group() as tg:

            async def read(name: Stream, chunks: AsyncIterator[bytes]) -> None:
                try:
                    got.chunks.append((name, await chunks.__anext__()))
                except StopAsyncIteration:
                    got.ended.append(name)
                except Exception as exc:  # a broken stream ends the stream, not the run
                    got.ended.append(name)
                    got.errors.append(f"{name} failed: {exc!r}")
                tg.cancel_scope.cancel()

            async def wait_exit() -> None:
                try:
                    self.exit_code = await self._handle.wait()
                except Exception as exc:
                    got.errors.append(f"wait failed: {exc!r}")
                got.exited = True
                tg.cancel_scope.cancel()

            async def wait_cancel(event: anyio.Event) -> None:
                await event.wait()
                got.cancel_requested = True
                tg.cancel_scope.cancel()

            async def wait_timer() -> None:
                await anyio.sleep_until(until)
                got.timer = True
                tg.cancel_scope.cancel()

            for name, chunks in self._streams.items():
                tg.start_soon(read, name, chunks)
            if not self.exited:
                tg.start_soon(wait_exit)
            if cancel is not None:
                tg.start_soon(wait_cancel, cancel)
            tg.start_soon(wait_timer)
        for name in got.ended:
            self._streams.pop(name, None)
        self.exited = self.exited or got.exited
        return got
