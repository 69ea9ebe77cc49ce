"""WorkerWrapper: the process inside a worker that turns input-stream prompts into agent runs.

Data plane of issue #5: a client pushes prompts on ``worker:{id}:input`` and reads events
from ``worker:{id}:output``; the manager is not in the path. The parts:

* **Input** (:mod:`.worker_input`): a consumer group, leftovers of a crashed predecessor
  first; an entry is ACKed, then deleted, once its terminal event is published (the
  turn's result, or the error event of a malformed entry) and flushed.
* **Output** (:mod:`.worker_output`): every event batched, in order, with the worker's
  secret values redacted.
* **Requests** (:mod:`.worker_request`): worker-wide env and ``allowed_commands``, the
  secrets in every turn's env, a prompt's ``{{secret:NAME}}`` references filled in just
  before the agent gets it (an unknown one fails that run with ``unknown_prompt_secret``;
  the worker goes on), per-run costs.
* **Instructions** go to the file the CLI reads by itself (``CLAUDE.md``, ``GEMINI.md``,
  ``AGENTS.md`` for the others), written once at start, not per turn.
* **Lifecycle**: ``ready`` after start, ``heartbeat`` every ``heartbeat_s`` (detail:
  ``turns`` handled, ``busy``), ``stopped`` at the end (detail ``reason``: ``stop_requested``,
  ``cancelled``, or ``failed`` when an error escapes, e.g. the bus is gone: best effort).
  Heartbeats are events on the output stream only (no Redis key): the EventBus port has
  no key operations, and the manager can read the stream's last entry. A publish failure
  ends the publisher task and with it :meth:`WorkerWrapper.run`; the worker process waits
  out a Redis outage first (:mod:`.worker_outage`), and ``bus_back`` sends a heartbeat as
  soon as Redis is back.
* **Git** (a prompt's ``git``): clone/branch before, commit/push after (:mod:`.worker_git`).
* **Multi-turn**: every turn resumes the session id of the last result that reported one.
* **Cancellation** (SIGTERM, the manager stopping the worker) mid-turn publishes the
  events still buffered, a ``cancelled`` result for that turn and ACKs it, then
  ``stopped``, inside a shielded scope with a deadline (the publisher, its task gone,
  publishes directly); the cancellation is re-raised.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import anyio
import structlog

from codeyard.app.worker_git import GitWorkspace, TurnGit
from codeyard.app.worker_input import INPUT_GROUP, WorkerInbox
from codeyard.app.worker_output import WorkerOutput
from codeyard.app.worker_request import RequestMaker, SessionCosts
from codeyard.domain.agent import AgentProvider, AgentRequest, AgentResult, ResultStatus
from codeyard.domain.errors import CodeyardError
from codeyard.domain.events import ErrorPayload, EventPayload, EventSequencer, ResultPayload
from codeyard.domain.streams import StreamMessage
from codeyard.domain.worker_io import WorkerInput, WorkerStop, parse_worker_message
from codeyard.ports.clock import Clock
from codeyard.ports.code_agent import CodeAgent
from codeyard.ports.event_bus import EventBus

__all__ = ["CLEANUP_DEADLINE_S", "INPUT_GROUP", "WorkerWrapper", "instructions_file"]

log = structlog.get_logger(__name__)

#: Deadline for the shielded last publications (cancelled result, ``stopped``).
CLEANUP_DEADLINE_S = 5.0

_INSTRUCTION_FILES: dict[str, str] = {
    AgentProvider.CLAUDE: "CLAUDE.md",
    AgentProvider.GEMINI: "GEMINI.md",
}


def instructions_file(provider: str) -> str:
    """The file ``provider``'s CLI reads its project instructions from."""
    return _INSTRUCTION_FILES.get(provider, "AGENTS.md")


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerWrapper:
    """Serve one worker's input stream until a stop message or cancellation (module doc)."""

    def __init__(
        self,
        worker_id: str,
        event_bus: EventBus,
        agent: CodeAgent,
        *,
        workdir: Path,
        instructions: str | None,
        provider: str,
        clock: Clock,
        heartbeat_s: float = 10.0,
        consumer: str | None = None,
        poll_s: float = 1.0,
        base_env: Mapping[str, str] | None = None,
        pinned_env: Mapping[str, str] | None = None,
        allowed_commands: tuple[str, ...] = (),
        secret_env: Mapping[str, str] | None = None,
        bus_back: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        if heartbeat_s <= 0 or poll_s <= 0:
            msg = "heartbeat_s and poll_s must be > 0"
            raise ValueError(msg)
        self.worker_id = worker_id
        self._agent = agent
        self._workdir = workdir
        self._instructions = instructions
        self._provider = provider
        self._heartbeat_s = heartbeat_s
        #: Returns when the bus answers again after an outage (``OutageGuard``).
        self._bus_back = bus_back or anyio.sleep_forever
        self._consumer = consumer or default_consumer()
        secrets = dict(secret_env or {})
        self._requests = RequestMaker(
            provider=provider,
            worker_id=worker_id,
            workdir=workdir,
            base_env=dict(base_env or {}),
            pinned_env=dict(pinned_env or {}),
            secret_env=secrets,
            allowed_commands=allowed_commands,
        )
        self._inbox = WorkerInbox(event_bus, worker_id, consumer=self._consumer, poll_s=poll_s)
        self._out = WorkerOutput(
            event_bus, worker_id, provider=provider, clock=clock, secret_values=secrets.values()
        )
        #: The session the next turn resumes (the last one a result reported).
        self.session_id: str | None = None
        self.turns = 0
        self._current: AgentRequest | None = None
        self._current_entry: str | None = None
        keep = (instructions_file(provider),) if instructions is not None else ()
        # The assignment's env (a git token among it) reaches git as it reaches the agent.
        git_env = {**os.environ, **(base_env or {})}
        self._workspace = GitWorkspace(workdir, env=git_env, keep=keep)
        self._costs = SessionCosts(cumulative=agent.capabilities().cumulative_cost)

    async def run(self) -> None:
        """Write the instructions, announce ``ready``, serve prompts; ``stopped`` at the end."""
        # A file write on a possibly slow workspace volume: off the event loop.
        await anyio.to_thread.run_sync(self._write_instructions)
        await self._inbox.open()
        await self._out.lifecycle("ready", consumer=self._consumer)  # direct: no task yet
        reason = "failed"  # an exception escaped (the event bus went away...)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._out.run)
                tg.start_soon(self._heartbeat)
                await self._serve()
                reason = "stop_requested"
                # Under the lock no heartbeat is handed over: the publisher is idle once
                # flushed, and the cancel cuts no batch short.
                async with self._out.own_lock:
                    await self._out.flush()
                    tg.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            reason = "cancelled"
            raise
        except BaseExceptionGroup as group:
            # The loop or the heartbeat failed: callers get that error, not anyio's wrapper.
            raise group.exceptions[0] from None
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_DEADLINE_S):
                try:
                    await self._finish_interrupted_turn()
                    await self._out.lifecycle("stopped", reason=reason, turns=self.turns)
                except CodeyardError as exc:
                    if reason == "stop_requested":
                        raise
                    # Another error or a cancellation is already on its way out and says
                    # more than this one; replacing it would hide it.
                    log.warning("worker: final events not published", error=exc.to_dict())

    # --- input -----------------------------------------------------------------------------

    async def _serve(self) -> None:
        for entry in await self._inbox.leftovers():
            if await self._handle(entry):
                return
        while True:
            for entry in await self._inbox.next():
                if await self._handle(entry):
                    return

    async def _handle(self, entry: StreamMessage) -> bool:
        """Process one entry; True when it asks the wrapper to stop."""
        try:
            message = parse_worker_message(entry.fields)
        except CodeyardError as exc:
            await self._out.own_event(_error(exc, entry.id))
            await self._done(entry.id)
            return False
        if isinstance(message, WorkerStop):
            await self._done(entry.id)
            return True
        await self._turn(message, entry.id)
        await self._done(entry.id)
        return False

    async def _done(self, entry_id: str) -> None:
        """ACK and delete an input entry once the events published for it are on the stream."""
        await self._out.flush()
        await self._inbox.done(entry_id)

    # --- one turn --------------------------------------------------------------------------

    async def _turn(self, message: WorkerInput, entry_id: str) -> None:
        try:
            request = self._requests.request(message, self.session_id)
        except CodeyardError as exc:
            if message.request_id is None:  # no run anyone waits on: the wrapper's own error
                await self._out.own_event(_error(exc, entry_id))
            else:  # the client waits on this run, prompt_pushed looks for it: a result
                await self._refuse(message.request_id, exc, entry_id)
            return
        self._current, self._current_entry = request, entry_id
        result: AgentResult | None = None
        git = TurnGit(self._workspace.with_env(message.env), message.git) if message.git else None
        try:
            # Filled in here, not earlier: the request with the values lives for this turn
            # only. An unknown reference refuses the turn like a bad request.
            filled = self._requests.with_secrets(request)
            if git is not None:
                await git.prepare()  # a GitFailed refuses the turn like a bad request
            async with contextlib.aclosing(self._agent.execute(filled)) as events:
                async for raw_event in events:
                    event = self._costs.own_cost(request, raw_event)
                    if git is None or not git.hold(event):
                        await self._out.publish(event)
                    if isinstance(event.payload, ResultPayload):
                        result = event.payload.result
            for event in await git.close() if git is not None else ():
                await self._out.publish(event)
        except CodeyardError as exc:  # refused before any event (InvalidInput, resume, git)
            result = await self._refuse(request.id, exc, entry_id)
        self._current = self._current_entry = None
        self.turns += 1
        if result is not None and result.session_id:
            self.session_id = result.session_id

    async def _refuse(self, run_id: str, exc: CodeyardError, entry_id: str) -> AgentResult:
        """Run ``run_id`` refused before any event: its error, then its failed result."""
        failed = EventSequencer(provider=self._provider, worker_id=self.worker_id, run_id=run_id)
        await self._out.publish(failed.stamp(_error(exc, entry_id)))
        result = AgentResult(
            status=ResultStatus.ERROR,
            provider=self._provider,
            error=exc.message,
            terminal_reason=exc.code,
        )
        await self._out.publish(failed.stamp(ResultPayload(result=result)))
        return result

    async def _finish_interrupted_turn(self) -> None:
        """A turn cut short by cancellation still gets its terminal event, then its ACK."""
        request, entry_id = self._current, self._current_entry
        if request is None or entry_id is None:
            return
        self._current = self._current_entry = None
        sequencer = EventSequencer(
            provider=self._provider, worker_id=self.worker_id, run_id=request.id
        )
        result = AgentResult(
            status=ResultStatus.CANCELLED,
            provider=self._provider,
            session_id=self.session_id,
            error="the worker was stopped",
            terminal_reason="worker_stopped",
        )
        await self._out.publish(sequencer.stamp(ResultPayload(result=result)))
        await self._done(entry_id)

    # --- output ----------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            # Also at once when Redis is back from an outage: the manager may be counting
            # down to "unhealthy" (worker_outage module doc).
            with anyio.move_on_after(self._heartbeat_s):
                await self._bus_back()
            busy = self._current is not None
            await self._out.lifecycle("heartbeat", turns=self.turns, busy=busy)

    def _write_instructions(self) -> None:
        # The workdir too, instructions or not: every turn runs there.
        self._workdir.mkdir(parents=True, exist_ok=True)
        if self._instructions is None:
            return
        (self._workdir / instructions_file(self._provider)).write_text(
            self._instructions, encoding="utf-8"
        )


def _error(exc: CodeyardError, entry_id: str) -> EventPayload:
    return ErrorPayload(message=f"input entry {entry_id}: {exc}", code=exc.code)
