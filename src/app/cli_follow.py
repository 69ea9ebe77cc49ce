"""Following a worker's output events from the terminal: ``logs -f`` and ``attach``.

Both check the worker exists first (``WorkerNotFound`` otherwise: an unknown id would
just wait forever on an empty stream), show the stream from its start (the run so far,
then live), and end when the worker stops: its ``stopped`` lifecycle event, or the failed
result the manager publishes when its container died.
"""

from __future__ import annotations

import math
import sys
import threading
import uuid
from contextlib import aclosing
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

import anyio
import anyio.from_thread
import anyio.lowlevel
import typer
from anyio.streams.memory import MemoryObjectSendStream

from codeyard.app.cli_render import EventLine, EventRenderer, is_worker_stopped, shorten
from codeyard.domain.events import CONTAINER_DIED_PREFIX

if TYPE_CHECKING:
    from codeyard.client import CodeyardClient, WorkerEvent


def _echo(lines: list[EventLine]) -> None:
    for line in lines:
        typer.echo(line.plain())


def _ends_worker(item: WorkerEvent) -> bool:
    if is_worker_stopped(item.event):
        return True
    result = item.result
    reason = "" if result is None else (result.terminal_reason or "")
    return item.event.run_id is None and reason.startswith(CONTAINER_DIED_PREFIX)


async def follow_worker(client: CodeyardClient, worker_id: str, *, as_json: bool) -> None:
    """Print the worker's events (rendered, or one JSON a line) until it stops."""
    await client.status(worker_id)
    renderer = EventRenderer()
    try:
        async with aclosing(client.events(worker_id)) as events:
            async for item in events:
                if as_json:
                    typer.echo(item.event.model_dump_json())
                else:
                    _echo(renderer.feed(item.event))
                if _ends_worker(item):
                    return
    finally:
        _echo(renderer.flush())


async def attach_worker(
    client: CodeyardClient, worker_id: str, stdin: TextIO | None = None
) -> None:
    """Follow the worker and send each non-blank line of ``stdin`` as a prompt.

    At end of input, waits for the results of the prompts sent, then returns (the worker
    keeps running); returns at once when the worker stops.
    """
    await client.status(worker_id)
    source = sys.stdin if stdin is None else stdin
    renderer = EventRenderer()
    pending: set[str] = set()
    input_ended = False
    done = anyio.Event()
    send_lines, lines = anyio.create_memory_object_stream[str | None](math.inf)
    _start_reader(source, send_lines)

    async def send_prompts() -> None:
        nonlocal input_ended
        async with lines:
            async for line in lines:
                if line is None:
                    break
                prompt = line.rstrip("\r\n")
                if not prompt.strip():
                    continue
                # The id is known before the send, so a fast result cannot be missed.
                request_id = uuid.uuid4().hex
                pending.add(request_id)
                await client.send(worker_id, prompt, request_id=request_id)
                now = datetime.now().astimezone().strftime("%H:%M:%S")
                _echo([EventLine(time=now, kind="prompt", text=shorten(prompt))])
        input_ended = True
        if not pending:
            done.set()

    async def show_events() -> None:
        async with aclosing(client.events(worker_id)) as events:
            async for item in events:
                _echo(renderer.feed(item.event))
                if item.result is not None and item.event.run_id in pending:
                    pending.discard(item.event.run_id or "")
                    if input_ended and not pending:
                        break
                if _ends_worker(item):
                    break
        done.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(send_prompts)
            tg.start_soon(show_events)
            await done.wait()
            tg.cancel_scope.cancel()
    finally:
        _echo(renderer.flush())


def _start_reader(source: TextIO, sink: MemoryObjectSendStream[str | None]) -> None:
    """Read ``source`` line by line in a daemon thread: a thread blocked on a terminal
    cannot be cancelled, and a daemon one does not keep the process alive after attach
    ended for another reason (the worker stopped)."""
    token = anyio.lowlevel.current_token()

    def forward(line: str | None) -> None:
        try:
            anyio.from_thread.run_sync(sink.send_nowait, line, token=token)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, RuntimeError):
            raise SystemExit from None  # attach is over: nobody reads any more

    def read() -> None:
        try:
            for line in iter(source.readline, ""):
                forward(line)
        except (OSError, ValueError):
            pass  # stdin closed under us: treated as its end
        forward(None)

    threading.Thread(target=read, name="codeyard-attach-stdin", daemon=True).start()
