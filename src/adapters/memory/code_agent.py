"""ScriptedCodeAgent: an in-memory CodeAgent that plays a script instead of running a CLI.

FOR FAST UNIT TESTS AND THE EMBEDDED (OFFLINE) DEFAULT ONLY. It starts no process and
talks to no model; it replays domain payloads through an :class:`EventSequencer` while
honouring the :class:`~codeyard.ports.code_agent.CodeAgent` contract exactly, so code
written against it behaves the same with the real CLI adapters:

* ``seq`` runs 0, 1, 2... and the last event is always a ``result``; a script without one
  gets a synthesized ``error`` result, and nothing of the script after its first result is
  played.
* The request is checked before any event: a provider other than this adapter's raises
  ``UnsupportedProvider``, a ``session_id`` when ``resume`` is not a capability raises
  ``ResumeUnsupported``, a request id already running raises ``AlreadyExists``. A script
  callable that raises does so before any event too (the script is built up front).
* ``cancel(request_id)`` ends the running iterator with a ``cancelled`` result;
  ``request.timeout_s`` / ``idle_timeout_s`` end it with a ``timeout`` result, measured
  against ``step_delay_s`` (the pause before each scripted event).
* anyio cancellation of the consumer propagates unchanged (never swallowed); the run is
  forgotten in a ``finally``, so nothing is left running. Consumers should iterate inside
  ``contextlib.aclosing`` so an abandoned iterator is closed promptly.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

from codeyard.domain.agent import (
    AgentCapabilities,
    AgentRequest,
    AgentResult,
    ResultStatus,
    TokenUsage,
)
from codeyard.domain.errors import AlreadyExists, ResumeUnsupported, UnsupportedProvider
from codeyard.domain.events import (
    AgentEvent,
    EventPayload,
    EventSequencer,
    InitPayload,
    MessagePayload,
    ResultPayload,
    ToolResultPayload,
    ToolUsePayload,
    UsagePayload,
)


@dataclass(frozen=True)
class Pause:
    """A script step that emits nothing for ``seconds`` (added to the next event's delay).

    ``[InitPayload(), Pause(60)]`` imitates a CLI that hangs without a result.
    """

    seconds: float


ScriptItem = EventPayload | Pause
Script = Iterable[ScriptItem] | Callable[[AgentRequest], Iterable[ScriptItem]]
"""A fixed list of steps, or a function building them from the request."""

SCRIPTED_PROVIDER = "scripted"

DEFAULT_CAPABILITIES = AgentCapabilities(
    resume=True, interrupt=True, streaming_deltas=False, reports_cost=True, max_turns=True
)


def default_script(
    request: AgentRequest, *, provider: str = SCRIPTED_PROVIDER
) -> list[EventPayload]:
    """A plausible successful turn, shaped like Claude Code's: init, a tool call, an answer."""
    session_id = request.session_id or uuid.uuid4().hex
    usage = TokenUsage(input_tokens=100, output_tokens=40)
    answer = f"Done: {request.prompt.strip().splitlines()[0][:80]}"
    return [
        InitPayload(session_id=session_id, model=request.model or "scripted", cwd=request.workdir),
        MessagePayload(text="Let me look at the workspace first."),
        ToolUsePayload(tool_use_id="tool_1", name="Bash", input={"command": "ls"}),
        ToolResultPayload(tool_use_id="tool_1", output="README.md\nsrc\n"),
        MessagePayload(text=answer),
        UsagePayload(usage=usage, cost_usd=0.0012),
        ResultPayload(
            result=AgentResult(
                status=ResultStatus.SUCCESS,
                provider=provider,
                session_id=session_id,
                text=answer,
                cost_usd=0.0012,
                usage=usage,
                turns=2,
            )
        ),
    ]


_Stop = tuple[ResultStatus, str, str]
"""Why a run stops early: (status, terminal_reason, error)."""
_CANCELLED: _Stop = (ResultStatus.CANCELLED, "cancel_requested", "cancelled on request")
_NO_RESULT: _Stop = (ResultStatus.ERROR, "no_result", "the script ended without a result")


@dataclass
class _Run:
    cancel_requested: anyio.Event = field(default_factory=anyio.Event)


class ScriptedCodeAgent:
    """In-memory CodeAgent for tests and the embedded default (see the module docstring).

    ``script``: payloads (and :class:`Pause` steps) to play, or a callable building them
    from the request (called once per run, before any event); ``None`` plays
    :func:`default_script`. ``step_delay_s``: pause before every event, so timeouts and
    cancellation can be exercised.
    """

    def __init__(
        self,
        script: Script | None = None,
        *,
        provider: str = SCRIPTED_PROVIDER,
        step_delay_s: float = 0.0,
        capabilities: AgentCapabilities = DEFAULT_CAPABILITIES,
    ) -> None:
        if step_delay_s < 0:
            msg = "step_delay_s must be >= 0"
            raise ValueError(msg)
        self._script = script
        self._provider = provider
        self._step_delay_s = step_delay_s
        self._capabilities = capabilities
        self._runs: dict[str, _Run] = {}

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def running(self) -> frozenset[str]:
        """Request ids whose run has started and not finished (for tests and diagnostics)."""
        return frozenset(self._runs)

    def capabilities(self) -> AgentCapabilities:
        return self._capabilities

    async def cancel(self, request_id: str) -> None:
        run = self._runs.get(request_id)
        if run is not None:
            run.cancel_requested.set()

    async def execute(self, request: AgentRequest) -> AsyncGenerator[AgentEvent, None]:
        self._check(request)
        steps = self._build_script(request)
        run = _Run()
        sequencer = EventSequencer(
            provider=self._provider,
            worker_id=request.worker_id,
            task_id=request.task_id,
            run_id=request.id,
        )
        started = anyio.current_time()
        deadline = started + request.timeout_s
        pending = 0.0
        self._runs[request.id] = run
        try:
            for item in steps:
                if isinstance(item, Pause):
                    pending += item.seconds
                    continue
                stop = await self._pause(run, request, deadline, self._step_delay_s + pending)
                pending = 0.0
                if stop is not None:
                    yield sequencer.stamp(self._synthesized(stop, started))
                    return
                yield sequencer.stamp(item)
                if item.type == "result":
                    return
            stop = await self._pause(run, request, deadline, pending) if pending else None
            yield sequencer.stamp(self._synthesized(stop or _NO_RESULT, started))
        finally:
            self._runs.pop(request.id, None)

    # --- internals -------------------------------------------------------------------------

    def _check(self, request: AgentRequest) -> None:
        if request.provider != self._provider:
            raise UnsupportedProvider(
                "request is for another provider",
                requested=request.provider,
                adapter=self._provider,
            )
        if request.session_id is not None and not self._capabilities.resume:
            raise ResumeUnsupported(
                "this adapter cannot resume sessions",
                provider=self._provider,
                session_id=request.session_id,
            )
        if request.id in self._runs:
            raise AlreadyExists("a run with this request id is running", request_id=request.id)

    def _build_script(self, request: AgentRequest) -> list[ScriptItem]:
        if self._script is None:
            return [*default_script(request, provider=self._provider)]
        if callable(self._script):
            return list(self._script(request))
        return list(self._script)

    @staticmethod
    async def _pause(
        run: _Run, request: AgentRequest, deadline: float, step: float
    ) -> _Stop | None:
        """Wait ``step`` before the next event; return why the run must stop, if it must."""
        if run.cancel_requested.is_set():
            return _CANCELLED
        remaining = max(deadline - anyio.current_time(), 0.0)
        # Decide the outcome before waiting, so timer jitter cannot change it.
        outcome: _Stop | None
        if remaining <= min(step, request.idle_timeout_s):
            wait, outcome = remaining, (ResultStatus.TIMEOUT, "timeout", "hard deadline passed")
        elif request.idle_timeout_s <= step:
            wait = request.idle_timeout_s
            outcome = (ResultStatus.TIMEOUT, "idle_timeout", "no output within idle_timeout_s")
        else:
            wait, outcome = step, None
        if wait > 0:
            with anyio.move_on_after(wait):
                await run.cancel_requested.wait()
        else:
            # Even a zero-delay script gives the consumer's cancel scope and cancel() a chance.
            await anyio.lowlevel.checkpoint()
        return _CANCELLED if run.cancel_requested.is_set() else outcome

    def _synthesized(self, stop: _Stop, started: float) -> ResultPayload:
        status, reason, error = stop
        return ResultPayload(
            result=AgentResult(
                status=status,
                provider=self._provider,
                error=error,
                terminal_reason=reason,
                duration_s=max(anyio.current_time() - started, 0.0),
            )
        )
