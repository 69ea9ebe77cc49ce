"""The watchdog-guarded run loop of every CLI provider: :func:`run_cli`.

Contract of :func:`run_cli` (it is what makes a provider a correct ``CodeAgent``):

* Before the first event: the provider's files are written under ``home`` (dirs 0700,
  files 0600), the process is started through the ``ProcessLauncher`` with the
  invocation's env plus ``HOME``. Errors up to here RAISE (typed: ``InvalidRequest`` for a
  bad file path, ``NotFound``/``ExecutableNotFound`` for a missing binary or cwd,
  ``ServiceUnavailable`` when the place to run it is gone): no run happened.
* stdout: chunks -> lines (:mod:`~codeyard.adapters.cli.lines`, 8 MiB cap; an over-long
  line becomes a ``RawPayload`` with reason ``line_too_long``) -> :class:`Redactor` ->
  ``parser.feed`` -> payloads scrubbed once more -> stamped by one ``EventSequencer``
  (``seq`` 0, 1, 2... ``provider``, ``run_id=request.id``, ``worker_id``, ``task_id``).
  Blank lines are skipped.
* stderr: each non-blank line becomes a ``StderrPayload`` event, redacted, cut to
  ``max_stderr_line_chars``; after ``max_stderr_events`` lines no more stderr events are
  emitted (a ``lifecycle`` event ``stderr_capped`` with the dropped count comes before the
  result), but the last ``stderr_tail_lines`` lines are always kept for the error text.
* Watchdogs: no stdout/stderr output for ``request.idle_timeout_s`` -> timeout
  (``idle_timeout``); ``request.timeout_s`` after start -> timeout (``timeout``);
  ``cancel`` set -> cancelled (``cancel_requested``). Each runs the invocation's
  ``interrupt`` steps (signal the group, wait up to the step's grace for the leader to
  exit, still reading output), then SIGKILLs the group. Output read meanwhile is still
  emitted; a result the CLI prints while being interrupted lends its session id, text and
  usage to the final result, whose status stays cancelled/timeout.
* The CLI's own ``ResultPayload`` is held back: the loop waits up to
  ``result_exit_grace_s`` for the CLI to exit (stderr still flows, further stdout is
  ignored), kills the group, fills ``exit_code`` and ``duration_s``, then yields it.
* When the leader exits, the pipes get ``exit_drain_s`` to reach EOF (a tool process left
  behind may hold them open), then the group is killed.
* Exactly one ``result`` event ends every run, after the whole process group is killed and
  reaped; nothing follows it. Without a CLI result it is synthesized (see
  :mod:`~codeyard.adapters.cli.outcome`): status error with the exit code and the stderr
  tail, or timeout/cancelled; ``session_id`` from ``parser.session_id``, text = the last
  assistant text, usage and cost summed from ``UsagePayload`` events.
* Consumer cancellation and ``aclose()`` of the generator kill the group (shielded, with a
  deadline) and propagate; cancellation is never swallowed.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import anyio
import anyio.to_thread

from codeyard.adapters.cli.home import check_relative, write_home_files
from codeyard.adapters.cli.lines import DEFAULT_MAX_LINE_BYTES
from codeyard.adapters.cli.outcome import CANCEL_REQUESTED, HARD_DEADLINE, IDLE_TIMEOUT, Stop
from codeyard.adapters.cli.pump import Pump
from codeyard.adapters.cli.stream import RunStream
from codeyard.adapters.cli.types import CliInvocation, ProviderSpec
from codeyard.domain.agent import AgentRequest
from codeyard.domain.events import AgentEvent
from codeyard.ports.process_launcher import ProcessHandle, ProcessLauncher


@dataclass(frozen=True)
class RunLimits:
    """Tunables of the run loop (defaults suit real CLIs; tests shrink them)."""

    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_stderr_line_chars: int = 8192
    max_stderr_events: int = 1000
    stderr_tail_lines: int = 20
    #: After the CLI's own result: how long it may take to exit before the group is killed.
    result_exit_grace_s: float = 5.0
    #: After the leader exited: how long the pipes may take to reach EOF.
    exit_drain_s: float = 2.0
    #: Upper bound of the final kill-and-reap (shielded from cancellation).
    close_deadline_s: float = 10.0


DEFAULT_LIMITS = RunLimits()


class _Shutdown:
    """Kills the group once; shielded so it also runs under cancellation."""

    def __init__(self, handle: ProcessHandle, deadline_s: float) -> None:
        self._handle = handle
        self._deadline_s = deadline_s
        self.done = False

    async def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._deadline_s):
            await self._handle.aclose()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


async def run_cli(
    spec: ProviderSpec,
    request: AgentRequest,
    *,
    launcher: ProcessLauncher,
    home: Path,
    cli_home: PurePosixPath | None = None,
    cancel: anyio.Event | None = None,
    limits: RunLimits = DEFAULT_LIMITS,
) -> AsyncGenerator[AgentEvent, None]:
    """Run one turn of ``spec``'s CLI; see the module docstring for the contract.

    ``home`` is where the files are written (a persistent per-worker directory: CLIs keep
    their sessions there, so it must survive between turns for resume to work).
    ``cli_home`` is the same directory as the CLI sees it (e.g. its mount point inside a
    worker container); it defaults to ``home``.
    """
    cli_home = cli_home or PurePosixPath(home)
    invocation = spec.invocation(request, home=cli_home)
    for rel in invocation.files:
        check_relative(rel)
    parser = spec.new_parser(request)
    await anyio.to_thread.run_sync(write_home_files, home, invocation.files)
    env = {**invocation.env, "HOME": str(cli_home)}
    handle = await launcher.start(invocation.argv, env=env, cwd=invocation.cwd or request.workdir)
    shutdown = _Shutdown(handle, limits.close_deadline_s)
    try:
        stream = RunStream(spec.name, request, invocation, parser, limits)
        yield stream.spawned(handle.pid, PurePosixPath(invocation.argv[0]).name)
        pump = Pump(handle)
        watch = _Watch(request, pump, stream, limits)
        async with contextlib.aclosing(watch.run(cancel)) as events:
            async for event in events:
                yield event
        stopped_by: str | None = None
        if watch.stop is not None:
            steps = _interrupt(invocation, handle, pump, stream, limits)
            async with contextlib.aclosing(steps):
                async for step_event, by in steps:
                    stopped_by = by or stopped_by
                    if step_event is not None:
                        yield step_event
            if not pump.exited:
                stopped_by = "SIGKILL"
        await shutdown()
        exit_code = pump.exit_code if pump.exit_code is not None else handle.returncode
        for final in stream.finish(watch.stop, stopped_by, exit_code, parser.session_id):
            yield final
    finally:
        await shutdown()


class _Watch:
    """The watchdog phase: pass output on until the CLI ends, or a timeout or a cancel
    request says it must be stopped (then ``stop`` tells why)."""

    def __init__(
        self, request: AgentRequest, pump: Pump, stream: RunStream, limits: RunLimits
    ) -> None:
        self._request = request
        self._pump = pump
        self._stream = stream
        self._limits = limits
        self.stop: Stop | None = None

    async def run(self, cancel: anyio.Event | None) -> AsyncGenerator[AgentEvent, None]:
        pump, stream, limits = self._pump, self._stream, self._limits
        idle_s = self._request.idle_timeout_s
        deadline = stream.started + self._request.timeout_s
        idle_at = anyio.current_time() + idle_s
        # Once the CLI reported its result or exited, only draining is left until then;
        # timeouts and cancel requests no longer apply.
        settle_at: float | None = None
        while not pump.finished:
            until = min(deadline, idle_at) if settle_at is None else settle_at
            got = await pump.next(until, cancel if settle_at is None else None)
            for event in stream.take(got):
                yield event
            now = anyio.current_time()
            if got.chunks:
                idle_at = now + idle_s
            if stream.cli_result is not None and settle_at is None:
                settle_at = now + limits.result_exit_grace_s
            if pump.exited:
                drained_at = now + limits.exit_drain_s
                settle_at = drained_at if settle_at is None else min(settle_at, drained_at)
            if settle_at is not None:
                if now >= settle_at:
                    return
            elif got.cancel_requested:
                self.stop = CANCEL_REQUESTED
                return
            elif now >= deadline:
                self.stop = HARD_DEADLINE
                return
            elif now >= idle_at:
                self.stop = IDLE_TIMEOUT
                return


async def _interrupt(
    invocation: CliInvocation,
    handle: ProcessHandle,
    pump: Pump,
    stream: RunStream,
    limits: RunLimits,
) -> AsyncGenerator[tuple[AgentEvent | None, str | None], None]:
    """Run the escalation steps; yields ``(event, signal that ended it or None)``."""
    for step in invocation.interrupt:
        if pump.exited:
            break
        await handle.signal_group(step.signum)
        name = _signal_name(step.signum)
        step_end = anyio.current_time() + step.grace_s
        while not pump.finished and anyio.current_time() < step_end:
            got = await pump.next(step_end)
            for event in stream.take(got):
                yield event, None
            if pump.exited:
                yield None, name
                break
    drain_end = anyio.current_time() + limits.exit_drain_s
    while pump.exited and pump.pipes_open and anyio.current_time() < drain_end:
        for event in stream.take(await pump.next(drain_end)):
            yield event, None
