"""Run one command to its end with its output captured: ``exec`` of the local runtime."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Mapping, Sequence

import anyio
import anyio.abc

from codeyard.adapters.process.local import exit_code
from codeyard.adapters.process.reaper import kill_run
from codeyard.domain.container import ExecResult

_READ_SIZE = 65536


async def run_captured(argv: Sequence[str], *, cwd: str, env: Mapping[str, str]) -> ExecResult:
    """Run ``argv`` in its own process group and wait for it.

    A start failure (bad ``cwd``, not executable) is exit code 126, as Docker's exec
    reports it. Cancelled, it SIGKILLs the group and its descendants before returning.
    """
    try:
        child = await anyio.open_process(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        return ExecResult(exit_code=126, stderr=f"exec: cannot start in {cwd}: {exc}\n")
    out, err = bytearray(), bytearray()
    try:
        async with anyio.create_task_group() as tg:
            for stream, sink in ((child.stdout, out), (child.stderr, err)):
                tg.start_soon(_drain, stream, sink)
        code = await child.wait()
    finally:
        if child.returncode is None:  # cancelled: the tools it started go with it
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await kill_run(child.pid, leader=child.pid)
                await child.wait()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await child.aclose()
    return ExecResult(
        exit_code=exit_code(code),
        stdout=out.decode("utf-8", errors="replace"),
        stderr=err.decode("utf-8", errors="replace"),
    )


async def _drain(stream: anyio.abc.ByteReceiveStream | None, sink: bytearray) -> None:
    if stream is None:
        return
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
        while True:
            sink += await stream.receive(_READ_SIZE)
