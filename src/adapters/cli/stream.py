"""Turning one run's raw output into stamped events: :class:`RunStream`.

Owns the run's :class:`EventSequencer` (so ``seq`` is decided in one place), the line
splitters of both pipes, the :class:`Redactor`, the provider's parser and the
:class:`~codeyard.adapters.cli.outcome.Tally`. Pure bookkeeping, no I/O: the run loop
feeds it what :class:`~codeyard.adapters.cli.pump.Pump` observed and yields what it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from pydantic import JsonValue

from codeyard.adapters.cli.lines import Line, LineSplitter
from codeyard.adapters.cli.outcome import Stop, Tally
from codeyard.adapters.cli.pump import Inputs, Stream
from codeyard.adapters.cli.redact import Redactor
from codeyard.adapters.cli.types import CliInvocation, LineParser, Parsed
from codeyard.domain.agent import AgentRequest, AgentResult
from codeyard.domain.events import (
    AgentEvent,
    ErrorPayload,
    EventPayload,
    EventSequencer,
    LifecyclePayload,
    RawPayload,
    ResultPayload,
    StderrPayload,
)

if TYPE_CHECKING:
    from codeyard.adapters.cli.runner import RunLimits


#: ``LifecyclePayload.state`` of a run's first event: the agent CLI was launched.
AGENT_STARTED = "agent_started"


class RunStream:
    def __init__(
        self,
        provider: str,
        request: AgentRequest,
        invocation: CliInvocation,
        parser: LineParser,
        limits: RunLimits,
        *,
        clock: Callable[[], float] = anyio.current_time,
    ) -> None:
        self._clock = clock
        self.started = clock()
        self._sequencer = EventSequencer(
            provider=provider,
            worker_id=request.worker_id,
            task_id=request.task_id,
            run_id=request.id,
        )
        self._redactor = Redactor(invocation.secrets)
        self._parser = parser
        self._limits = limits
        self._splitters: dict[Stream, LineSplitter] = {
            "stdout": LineSplitter(limits.max_line_bytes),
            "stderr": LineSplitter(limits.max_line_bytes),
        }
        self._tally = Tally(provider=provider, stderr_tail_lines=limits.stderr_tail_lines)
        self._stderr_events = 0
        self._stderr_dropped = 0
        #: The CLI's own result, once it printed one (held back until the end).
        self.cli_result: AgentResult | None = None

    def spawned(self, pid: int | None, executable: str) -> AgentEvent:
        """The run's first event: the CLI process exists (``agent_started``), before its
        first output line. A CLI can take a second to print anything (Node start-up), and
        a client or watchdog should not have to guess whether it was launched at all."""
        detail: dict[str, JsonValue] = {"executable": executable}
        if pid is not None:
            detail["pid"] = pid
        return self._stamp(LifecyclePayload(state=AGENT_STARTED, detail=detail))

    def take(self, got: Inputs) -> list[AgentEvent]:
        """The events for what one wait observed, in output order per pipe."""
        events: list[AgentEvent] = []
        for problem in got.errors:
            self._tally.problems.append(problem)
            events.append(self._stamp(ErrorPayload(message=problem, code="launcher_error")))
        for name, chunk in got.chunks:
            self._lines(name, self._splitters[name].feed(chunk), events)
        for name in got.ended:
            self._lines(name, self._splitters[name].close(), events)
        return events

    def finish(
        self,
        stop: Stop | None,
        stopped_by: str | None,
        exit_code: int | None,
        session_id: str | None,
    ) -> list[AgentEvent]:
        """The closing events: the stderr cap notice if any, then the one result."""
        events: list[AgentEvent] = []
        if self._stderr_dropped:
            detail = {"dropped_lines": self._stderr_dropped, "cap": self._limits.max_stderr_events}
            events.append(self._stamp(LifecyclePayload(state="stderr_capped", detail=detail)))
        result = self._tally.final(
            cli_result=self.cli_result,
            stop=stop,
            stopped_by=stopped_by,
            exit_code=exit_code,
            session_id=session_id,
            duration_s=max(self._clock() - self.started, 0.0),
        )
        events.append(self._stamp(ResultPayload(result=result)))
        return events

    # --- internals -------------------------------------------------------------------------

    def _lines(self, name: Stream, lines: list[Line], events: list[AgentEvent]) -> None:
        for line in lines:
            if not line.strip():
                continue
            text = self._redactor.redact(line)
            if name == "stderr":
                self._stderr(text, events)
            elif self.cli_result is not None:
                continue  # nothing of the CLI's stdout follows its result
            elif line.truncated:
                events.append(self._stamp(RawPayload(reason="line_too_long"), raw=text))
            else:
                self._stdout(text, events)

    def _stdout(self, line: str, events: list[AgentEvent]) -> None:
        try:
            parsed = self._parser.feed(line)
        except Exception as exc:  # the parser contract says never; a bug must not end the run
            parsed = [
                Parsed(
                    ErrorPayload(message=f"parser failed: {exc!r}", code="parser_error"), raw=line
                )
            ]
        for item in parsed:
            payload = self._scrub(item.payload)
            if isinstance(payload, ResultPayload):
                if self.cli_result is None:
                    self.cli_result = payload.result
                continue
            if self.cli_result is not None:
                continue  # the parser's output after its own result is dropped too
            self._tally.observe(payload)
            raw = None if item.raw is None else self._redactor.redact(item.raw)
            events.append(self._sequencer.stamp(payload, raw=raw))

    def _stderr(self, line: str, events: list[AgentEvent]) -> None:
        cap = self._limits.max_stderr_line_chars
        if len(line) > cap:
            line = f"{line[:cap]}... [{len(line) - cap} more chars]"
        self._tally.stderr_tail.append(line)
        if self._stderr_events >= self._limits.max_stderr_events:
            self._stderr_dropped += 1
            return
        self._stderr_events += 1
        events.append(self._stamp(StderrPayload(line=line)))

    def _scrub(self, payload: EventPayload) -> EventPayload:
        if not self._redactor.active:
            return payload
        data = payload.model_dump(mode="python")
        clean = self._redactor.scrub(data)
        return payload if clean is data else type(payload).model_validate(clean)

    def _stamp(self, payload: EventPayload, *, raw: str | None = None) -> AgentEvent:
        return self._sequencer.stamp(self._scrub(payload), raw=raw)
