"""What the run loop remembers of a run to write its final result.

:class:`Tally` watches the payloads as they are emitted (last assistant text, summed usage
and cost, the stderr tail) and :meth:`Tally.final` builds the one ``AgentResult`` of the
run: the CLI's own result completed with what only the run loop knows (exit code,
duration), or a synthesized one when the CLI gave none or was stopped.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from codeyard.domain.agent import AgentResult, ResultStatus, TokenUsage
from codeyard.domain.events import EventPayload


@dataclass(frozen=True)
class Stop:
    """Why the run loop stopped the CLI itself (cancel request or a timeout)."""

    status: ResultStatus
    terminal_reason: str
    error: str


CANCEL_REQUESTED = Stop(ResultStatus.CANCELLED, "cancel_requested", "cancelled on request")
HARD_DEADLINE = Stop(ResultStatus.TIMEOUT, "timeout", "hard deadline (timeout_s) passed")
IDLE_TIMEOUT = Stop(ResultStatus.TIMEOUT, "idle_timeout", "no output within idle_timeout_s")


class Tally:
    def __init__(self, *, provider: str, stderr_tail_lines: int) -> None:
        self.provider = provider
        self.usage = TokenUsage()
        self.cost_usd: float | None = None
        self.saw_usage = False
        self.text = ""
        self._delta_id: str | None = None
        self._in_delta = False
        self._delta_text = ""
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=stderr_tail_lines)
        self.problems: list[str] = []

    def observe(self, payload: EventPayload) -> None:
        if payload.type == "message" and payload.role == "assistant" and payload.kind == "text":
            if not payload.delta:
                self.text, self._in_delta = payload.text, False
                return
            # Deltas of one message accumulate; a new message id starts a new text.
            if not self._in_delta or payload.message_id != self._delta_id:
                self._delta_text, self._delta_id, self._in_delta = "", payload.message_id, True
            self._delta_text += payload.text
            self.text = self._delta_text
        elif payload.type == "usage":
            # UsagePayloads are per model call, so the run's usage is their sum.
            self.usage = self.usage + payload.usage
            self.saw_usage = True
            if payload.cost_usd is not None:
                self.cost_usd = (self.cost_usd or 0.0) + payload.cost_usd

    def _stderr_excerpt(self) -> str:
        if not self.stderr_tail:
            return ""
        return "; stderr tail:\n" + "\n".join(self.stderr_tail)

    def final(
        self,
        *,
        cli_result: AgentResult | None,
        stop: Stop | None,
        stopped_by: str | None,
        exit_code: int | None,
        session_id: str | None,
        duration_s: float,
    ) -> AgentResult:
        """The run's result (see the module docstring)."""
        problems = "".join(f"; {p}" for p in self.problems)
        if cli_result is not None and stop is None:
            # A CLI result without usage or cost borrows what the UsagePayloads reported.
            known_cost = cli_result.cost_usd is not None
            known_exit = cli_result.exit_code is not None
            return cli_result.model_copy(
                update={
                    "usage": cli_result.usage if cli_result.usage.total else self.usage,
                    "cost_usd": cli_result.cost_usd if known_cost else self.cost_usd,
                    "exit_code": cli_result.exit_code if known_exit else exit_code,
                    "duration_s": cli_result.duration_s or duration_s,
                    "session_id": cli_result.session_id or session_id,
                }
            )
        if stop is not None:
            how = f" (stopped by {stopped_by})" if stopped_by else ""
            error = f"{stop.error}{how}{problems}"
            status, reason = stop.status, stop.terminal_reason
        else:
            code = "unknown" if exit_code is None else str(exit_code)
            error = f"the CLI exited with code {code} without a result{problems}"
            error += self._stderr_excerpt()
            status, reason = ResultStatus.ERROR, "no_result"
        # A CLI interrupted cleanly may still have reported its result: keep its facts.
        base = cli_result
        return AgentResult(
            status=status,
            provider=self.provider,
            session_id=(base.session_id if base else None) or session_id,
            text=(base.text if base else "") or self.text,
            cost_usd=base.cost_usd if base and base.cost_usd is not None else self.cost_usd,
            usage=base.usage if base and base.usage.total else self.usage,
            turns=base.turns if base else 0,
            duration_s=duration_s,
            error=error,
            terminal_reason=reason,
            exit_code=exit_code,
        )
