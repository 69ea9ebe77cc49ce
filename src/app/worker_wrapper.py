"""WorkerWrapper: the process inside a worker that turns input-stream prompts into agent runs.

Data plane of issue #5: a client pushes prompts on ``worker:{id}:input`` and reads events
from ``worker:{id}:output``; the manager is not in the path. Decisions:

* **Instructions** go to the file the CLI reads by itself (``CLAUDE.md``, ``GEMINI.md``,
  ``AGENTS.md`` for the others), written once at start, not per turn.
* **Output.** Each entry holds one :class:`AgentEvent` as JSON (field ``event``) and its
  payload type (field ``type``). Agent events keep the agent's own per-run ``seq`` and
  ``run_id`` (= the prompt's request id); the wrapper's own events (lifecycle, errors
  about input) carry ``run_id=None`` and a ``seq`` of their own.
* **Lifecycle**: ``ready`` after start, ``heartbeat`` every ``heartbeat_s`` (detail:
  ``turns`` handled, ``busy``), ``stopped`` at the end (detail ``reason``: ``stop_requested``,
  ``cancelled``, or ``failed`` when an error escapes, e.g. the bus is gone: best effort).
  Heartbeats are events on the output stream only (no Redis key): the EventBus port has
  no key operations, and the manager can read the stream's last entry.
* **Delivery.** Input is read through the consumer group ``worker`` so a restarted wrapper
  does not replay handled prompts. An entry is ACKed once its terminal event is published
  (the turn's result, or the error event of a malformed entry); entries left pending by a
  crashed predecessor are claimed and run again first (at-least-once per prompt).
* **Publishing.** Every output event goes through one :class:`.BatchingPublisher`: the
  loop hands events to its buffer and its task sends whatever is buffered in one
  ``publish_many`` (a lone event at once, a burst in few round trips), in hand-over order.
  Before an ACK the wrapper flushes it, so "published" above means on the stream. A
  publish failure ends the publisher task and with it :meth:`WorkerWrapper.run`.
* **Worker-wide request settings** (a standby worker's assignment): ``base_env`` is under
  every turn's ``env`` (the prompt's ``env`` wins), ``pinned_env`` over it (the PATH of an
  ``allowed_commands`` shim, which no prompt may widen), ``allowed_commands`` goes into
  every request.
* **Secrets** (``secret_env``: the container's credential-store variables, see
  :mod:`codeyard.domain.secrets`) go into every turn's env over ``base_env`` (a prompt's
  ``env`` may still set the variable: its sender knows what it sends), and their values
  are redacted from every event before it is published, whatever the provider, whatever
  produced the text (the CLI's output, a tool's, a git error): one regex search of the
  event's JSON, a scrub of the event only when it matches.
* **Git** (a prompt's ``git``): clone/branch before, commit/push after (:mod:`.worker_git`).
* **Multi-turn**: every turn resumes the session id of the last result that reported one.
* **Cancellation** (SIGTERM, the manager stopping the worker) mid-turn publishes the
  events still buffered, a ``cancelled`` result for that turn and ACKs it, then
  ``stopped``, inside a shielded scope with a deadline (the publisher, its task gone,
  publishes directly); the cancellation is re-raised.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path

import anyio
import structlog

from codeyard.adapters.cli.redact import Redactor
from codeyard.app.event_publisher import BatchingPublisher
from codeyard.app.worker_git import GitWorkspace, TurnGit
from codeyard.domain.agent import AgentProvider, AgentRequest, AgentResult, ResultStatus
from codeyard.domain.errors import CodeyardError
from codeyard.domain.events import (
    AgentEvent,
    ErrorPayload,
    EventPayload,
    EventSequencer,
    LifecyclePayload,
    ResultPayload,
)
from codeyard.domain.streams import (
    StreamMessage,
    parse_stream_id,
    worker_input_stream,
    worker_output_stream,
)
from codeyard.domain.worker_io import (
    EVENT_FIELD,
    TYPE_FIELD,
    WorkerInput,
    WorkerStop,
    parse_worker_message,
)
from codeyard.ports.clock import Clock
from codeyard.ports.code_agent import CodeAgent
from codeyard.ports.event_bus import EventBus

log = structlog.get_logger(__name__)

INPUT_GROUP = "worker"
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
    ) -> None:
        if heartbeat_s <= 0 or poll_s <= 0:
            msg = "heartbeat_s and poll_s must be > 0"
            raise ValueError(msg)
        self.worker_id = worker_id
        self._bus = event_bus
        self._agent = agent
        self._workdir = workdir
        self._instructions = instructions
        self._provider = provider
        self._clock = clock
        self._heartbeat_s = heartbeat_s
        self._consumer = consumer or default_consumer()
        self._poll_s = poll_s
        self._base_env = dict(base_env or {})
        self._pinned_env = dict(pinned_env or {})
        self._allowed_commands = allowed_commands
        self._secret_env = dict(secret_env or {})
        self._redactor = Redactor(self._secret_env.values())
        self._input = worker_input_stream(worker_id)
        self._output = worker_output_stream(worker_id)
        self._own = EventSequencer(provider=provider, worker_id=worker_id)
        self._own_lock = anyio.Lock()
        self._events = BatchingPublisher(event_bus, self._output)
        #: The session the next turn resumes (the last one a result reported).
        self.session_id: str | None = None
        self.turns = 0
        self._current: AgentRequest | None = None
        self._current_entry: str | None = None
        keep = (instructions_file(provider),) if instructions is not None else ()
        # The assignment's env (a git token among it) reaches git as it reaches the agent.
        git_env = {**os.environ, **self._base_env}
        self._workspace = GitWorkspace(workdir, env=git_env, keep=keep)
        self._cumulative_cost = agent.capabilities().cumulative_cost
        #: The last running cost total reported per session (cumulative_cost agents).
        self._session_costs: dict[str, float] = {}

    async def run(self) -> None:
        """Write the instructions, announce ``ready``, serve prompts; ``stopped`` at the end."""
        # A file write on a possibly slow workspace volume: off the event loop.
        await anyio.to_thread.run_sync(self._write_instructions)
        await self._bus.ensure_group(self._input, INPUT_GROUP)
        await self._lifecycle("ready", consumer=self._consumer)  # direct: no task yet
        reason = "failed"  # an exception escaped (the event bus went away...)
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(self._events.run)
                tg.start_soon(self._heartbeat)
                await self._serve()
                reason = "stop_requested"
                # Under the lock no heartbeat is handed over: the publisher is idle once
                # flushed, and the cancel cuts no batch short.
                async with self._own_lock:
                    await self._events.flush()
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
                    await self._lifecycle("stopped", reason=reason, turns=self.turns)
                except CodeyardError as exc:
                    if reason == "stop_requested":
                        raise
                    # Another error or a cancellation is already on its way out and says
                    # more than this one; replacing it would hide it.
                    log.warning("worker: final events not published", error=exc.to_dict())

    # --- input -----------------------------------------------------------------------------

    async def _serve(self) -> None:
        for entry in await self._leftovers():
            if await self._handle(entry):
                return
        while True:
            entries = await self._bus.read_group(
                self._input, INPUT_GROUP, self._consumer, count=1, block_s=self._poll_s
            )
            for entry in entries:
                if await self._handle(entry):
                    return

    async def _leftovers(self) -> list[StreamMessage]:
        """Entries a crashed predecessor took but never finished (not ACKed)."""
        found: list[StreamMessage] = []
        cursor = "0-0"
        while True:
            page = await self._bus.claim_stale(
                self._input, INPUT_GROUP, self._consumer, min_idle_s=0.0, cursor=cursor
            )
            found.extend(page.messages)
            cursor = page.cursor
            if cursor == "0-0":
                return sorted(found, key=lambda m: parse_stream_id(m.id))

    async def _handle(self, entry: StreamMessage) -> bool:
        """Process one entry; True when it asks the wrapper to stop."""
        try:
            message = parse_worker_message(entry.fields)
        except CodeyardError as exc:
            await self._own_event(_error(exc, entry.id))
            await self._ack(entry.id)
            return False
        if isinstance(message, WorkerStop):
            await self._ack(entry.id)
            return True
        await self._turn(message, entry.id)
        await self._ack(entry.id)
        return False

    async def _ack(self, entry_id: str) -> None:
        """ACK an input entry once the events published for it are on the stream."""
        await self._events.flush()
        await self._bus.ack(self._input, INPUT_GROUP, [entry_id])

    # --- one turn --------------------------------------------------------------------------

    async def _turn(self, message: WorkerInput, entry_id: str) -> None:
        try:
            request = self._request(message)
        except CodeyardError as exc:
            await self._own_event(_error(exc, entry_id))
            return
        self._current, self._current_entry = request, entry_id
        result: AgentResult | None = None
        git = TurnGit(self._workspace.with_env(message.env), message.git) if message.git else None
        try:
            if git is not None:
                await git.prepare()  # a GitFailed refuses the turn like a bad request
            async with contextlib.aclosing(self._agent.execute(request)) as events:
                async for raw_event in events:
                    event = self._own_cost(request, raw_event)
                    if git is None or not git.hold(event):
                        await self._publish(event)
                    if isinstance(event.payload, ResultPayload):
                        result = event.payload.result
            for event in await git.close() if git is not None else ():
                await self._publish(event)
        except CodeyardError as exc:  # refused before any event (InvalidInput, resume, git)
            failed = EventSequencer(
                provider=self._provider, worker_id=self.worker_id, run_id=request.id
            )
            await self._publish(failed.stamp(_error(exc, entry_id)))
            result = AgentResult(
                status=ResultStatus.ERROR,
                provider=self._provider,
                error=exc.message,
                terminal_reason=exc.code,
            )
            await self._publish(failed.stamp(ResultPayload(result=result)))
        self._current = self._current_entry = None
        self.turns += 1
        if result is not None and result.session_id:
            self.session_id = result.session_id

    def _own_cost(self, request: AgentRequest, event: AgentEvent) -> AgentEvent:
        """A result's cost as this run's own: some CLIs report the session's running total."""
        payload = event.payload
        if not isinstance(payload, ResultPayload):
            return event
        result = payload.result
        total, session = result.cost_usd, result.session_id
        if total is None:
            return event
        if session is not None and self._cumulative_cost:
            earlier = self._session_costs.get(request.session_id or "", 0.0)
            self._session_costs[session] = total
            if request.session_id is not None and total >= earlier:
                own = result.model_copy(update={"cost_usd": round(total - earlier, 10)})
                return event.model_copy(update={"payload": ResultPayload(result=own)})
        return event

    def _request(self, message: WorkerInput) -> AgentRequest:
        options: dict[str, object] = {
            key: value
            for key, value in (
                ("id", message.request_id),
                ("timeout_s", message.timeout_s),
                ("idle_timeout_s", message.idle_timeout_s),
                ("model", message.model),
                ("max_turns", message.max_turns),
            )
            if value is not None
        }
        idle_default = AgentRequest.model_fields["idle_timeout_s"].default
        if message.idle_timeout_s is None and message.timeout_s is not None:
            # A short hard deadline alone should not be refused for exceeding the default
            # idle timeout: the idle timeout then follows it.
            options["idle_timeout_s"] = min(idle_default, message.timeout_s)
        return AgentRequest(
            prompt=message.prompt,
            provider=self._provider,
            workdir=str(self._workdir),
            worker_id=self.worker_id,
            session_id=None if message.new_session else self.session_id,
            env={**self._base_env, **self._secret_env, **message.env, **self._pinned_env},
            allowed_commands=self._allowed_commands,
            **options,
        )

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
        await self._publish(sequencer.stamp(ResultPayload(result=result)))
        await self._ack(entry_id)

    # --- output ----------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await anyio.sleep(self._heartbeat_s)
            await self._lifecycle("heartbeat", turns=self.turns, busy=self._current is not None)

    async def _lifecycle(self, state: str, **detail: str | int | bool) -> None:
        payload = LifecyclePayload(
            state=state, detail={"at": self._clock.now().isoformat(), **detail}
        )
        await self._own_event(payload)

    async def _own_event(self, payload: EventPayload) -> None:
        # The heartbeat task publishes too: stamping and handing over under one lock keeps
        # the wrapper's own seq in stream order (the publisher keeps hand-over order).
        async with self._own_lock:
            await self._publish(self._own.stamp(payload))

    async def _publish(self, event: AgentEvent) -> None:
        data = event.model_dump_json()
        if self._redactor.contains_secret(data):
            # Scrubbed as data, not as text: a secret may also match JSON structure.
            scrubbed = self._redactor.scrub(event.model_dump(mode="json"))
            data = json.dumps(scrubbed, ensure_ascii=False, separators=(",", ":"))
        fields = {EVENT_FIELD: data, TYPE_FIELD: event.payload.type}
        await self._events.send(fields)

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
