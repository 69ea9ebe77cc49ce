"""``opencode run --format json`` stdout -> normalized payloads, one line at a time.

Each line is one JSON object ``{"type", "timestamp", "sessionID", ...}`` (recorded with
opencode-ai 1.18.33 in tests/fixtures/transcripts/opencode/run/); the CLI prints them from
its own session's server events:

* ``step_start`` (``part``: a ``step-start`` part) when a model call begins;
* ``text`` (``part``: a complete ``text`` part, with ``time.end``) and ``reasoning`` (only
  with ``--thinking``);
* ``tool_use`` (``part``: a ``tool`` part) once a tool call ended, ``completed`` or
  ``error``; there is no line when it starts;
* ``step_finish`` (``part``: a ``step-finish`` part with ``reason``, ``tokens``, ``cost``)
  when a model call ends;
* ``error`` (``error``: ``{"name", "data": {"message", "statusCode"...}}``) for a
  ``session.error`` of the session.

The CLI prints no result line: it stops when its session goes idle, exiting 0, or 1 when
an ``error`` line was printed. So the parser makes the turn's ``ResultPayload`` itself, on
the line that ends the turn, like OpenCode's own loop decides it: a ``step_finish`` whose
reason is neither ``tool-calls`` nor ``unknown`` (nor ``error``, which an ``error`` line
follows) -> success, with that reason as ``terminal_reason``; an ``error`` line -> error
(``MessageAbortedError``: cancelled). Parts map through the serve adapter's
:class:`~codeyard.adapters.opencode._parts.PartMapper` (text, reasoning, tools, usage).

Like every :class:`~codeyard.adapters.cli.types.LineParser` it never raises: a line that
is not a JSON object becomes a ``RawPayload`` (``malformed``), an object of an unknown
type or shape one with reason ``unrecognized``; each payload of a line carries the line as
``raw``, except the ``InitPayload`` made of the first session id and the result (made, not
printed).
"""

from __future__ import annotations

import json
from typing import Any

from codeyard.adapters.cli.types import Parsed
from codeyard.adapters.opencode._parts import PartMapper, as_dict
from codeyard.domain.agent import AgentResult, ResultStatus
from codeyard.domain.errors import CodeyardError
from codeyard.domain.events import (
    ErrorPayload,
    EventPayload,
    InitPayload,
    LifecyclePayload,
    RawPayload,
    ResultPayload,
)

#: The provider name of ``opencode run`` turns (``opencode`` is the serve adapter's).
PROVIDER = "opencode-run"

#: ``step_finish`` reasons after which OpenCode's loop goes on with another model call
#: (``error``: the ``error`` line that follows ends the turn instead).
_CONTINUES = frozenset({"tool-calls", "unknown", "error"})
#: The part type each line type carries.
_PART_TYPES = {
    "step_start": "step-start",
    "step_finish": "step-finish",
    "text": "text",
    "reasoning": "reasoning",
    "tool_use": "tool",
}
ABORTED = "MessageAbortedError"


def describe_error(error: dict[str, Any]) -> tuple[str, str, bool]:
    """``(name, message, retryable)`` of an OpenCode error object; the message names the
    HTTP status when there is one."""
    name = str(error.get("name") or "UnknownError")
    data = as_dict(error.get("data"))
    message = str(data.get("message") or name)
    status = data.get("statusCode")
    if isinstance(status, int) and not isinstance(status, bool) and str(status) not in message:
        message = f"{message} (HTTP {status})"
    return name, message, data.get("isRetryable") is True


class OpencodeRunParser:
    """The :class:`~codeyard.adapters.cli.types.LineParser` of ``opencode run``."""

    def __init__(
        self, *, model: str | None = None, cwd: str | None = None, provider: str = PROVIDER
    ) -> None:
        self._model = model
        self._cwd = cwd
        self._provider = provider
        self._parts = PartMapper()
        self._session_id: str | None = None
        self._result: AgentResult | None = None

    @property
    def session_id(self) -> str | None:
        return self._session_id

    @property
    def result(self) -> AgentResult | None:
        """The turn's result once a line ended the turn."""
        return self._result

    def feed(self, line: str) -> list[Parsed]:
        if not line.strip():
            return []
        try:
            event: Any = json.loads(line)
        except (ValueError, RecursionError):  # deep nesting makes json.loads recurse out
            return [Parsed(RawPayload(reason="malformed"), raw=line)]
        if not isinstance(event, dict):
            return [Parsed(RawPayload(reason="malformed"), raw=line)]
        out: list[Parsed] = []
        session_id = event.get("sessionID")
        if self._session_id is None and isinstance(session_id, str) and session_id:
            self._session_id = session_id
            out.append(Parsed(InitPayload(session_id=session_id, model=self._model, cwd=self._cwd)))
        try:
            payloads = self._event(event)
        except CodeyardError:  # a domain model refused a value (a tool input nested too deep)
            payloads = [RawPayload(reason="malformed")]
        if not payloads:
            payloads = [RawPayload(reason="unrecognized")]
        # The result is made, not printed: no line of its own.
        out.extend(
            Parsed(p) if isinstance(p, ResultPayload) else Parsed(p, raw=line) for p in payloads
        )
        return out

    # --- internals -------------------------------------------------------------------------

    def _event(self, event: dict[str, Any]) -> list[EventPayload]:
        kind = event.get("type")
        if kind == "error":
            return self._error(as_dict(event.get("error")))
        part_type = _PART_TYPES.get(kind) if isinstance(kind, str) else None
        if part_type is None:
            return []
        part = event.get("part")
        if not isinstance(part, dict) or part.get("type") != part_type:
            return []
        if part_type == "step-start":
            message_id = part.get("messageID")
            detail = {"message_id": message_id} if isinstance(message_id, str) else {}
            return [LifecyclePayload(state="step_started", detail=detail)]
        payloads = self._parts.updated(part, user=False)
        if part_type == "step-finish" and payloads:
            reason = part.get("reason")
            if isinstance(reason, str) and reason not in _CONTINUES:
                payloads = [*payloads, *self._finish(ResultStatus.SUCCESS, reason, None)]
        return payloads

    def _error(self, error: dict[str, Any]) -> list[EventPayload]:
        if not error:
            return []
        name, message, retryable = describe_error(error)
        payloads: list[EventPayload] = [
            ErrorPayload(message=message, code=name, retryable=retryable)
        ]
        if name == ABORTED:
            return [*payloads, *self._finish(ResultStatus.CANCELLED, "aborted", message)]
        return [*payloads, *self._finish(ResultStatus.ERROR, name, message)]

    def _finish(self, status: ResultStatus, reason: str, error: str | None) -> list[EventPayload]:
        if self._result is not None:
            return []
        turn = self._parts.summary()
        self._result = AgentResult(
            status=status,
            provider=self._provider,
            session_id=self._session_id,
            text=turn.text,
            cost_usd=turn.cost_usd,
            usage=turn.usage,
            turns=turn.steps,
            error=error,
            terminal_reason=reason,
        )
        return [ResultPayload(result=self._result)]
