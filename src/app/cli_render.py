"""Worker output events as one short line each, for ``codeyard logs -f``, ``attach`` and
the ``run`` progress display.

:class:`EventRenderer` is stateful because streaming message fragments (``delta=True``)
are concatenated per message: a message is shown once, as one line, when its full text
arrives, or when anything else comes first (the fragments gathered so far, so a provider
that never sends the full message still shows its text). Heartbeats are not shown: every
worker sends one every few seconds and they would drown the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydantic import JsonValue

from codeyard.domain.agent import AgentResult
from codeyard.domain.events import (
    AgentEvent,
    ErrorPayload,
    InitPayload,
    LifecyclePayload,
    MessagePayload,
    RawPayload,
    ResultPayload,
    StderrPayload,
    StdoutPayload,
    ToolResultPayload,
    ToolUsePayload,
    UsagePayload,
)

#: Longest text kept on a line (the rest becomes an ellipsis).
MAX_TEXT = 160
#: Longest tool input kept on a line.
MAX_INPUT = 80
#: Tool input keys that say what a call does better than the whole input does.
_SALIENT_KEYS = ("command", "file_path", "path", "pattern", "url", "query", "description")
#: Lifecycle detail keys worth a mention (the rest is internal bookkeeping).
_DETAIL_KEYS = ("reason", "error", "turns", "exit_code", "branch", "pr_url")
HEARTBEAT = "heartbeat"
STOPPED = "stopped"


def shorten(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` on one line (whitespace runs collapsed), at most ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def format_cost(cost_usd: float | None) -> str:
    return "cost n/a" if cost_usd is None else f"${cost_usd:.4f}"


def result_summary(result: AgentResult) -> str:
    """``status, cost, turns, duration[, reason][: error]`` of a run's result."""
    parts = [result.status.value, format_cost(result.cost_usd)]
    if result.turns:
        parts.append(f"{result.turns} turns")
    if result.duration_s:
        parts.append(f"{result.duration_s:.1f}s")
    if result.terminal_reason:
        parts.append(result.terminal_reason)
    summary = ", ".join(parts)
    return f"{summary}: {shorten(result.error)}" if result.error else summary


def tool_input_summary(data: dict[str, JsonValue]) -> str:
    """The salient value of a tool call's input (its command, path...), else compact JSON."""
    for key in _SALIENT_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value:
            return shorten(value, MAX_INPUT)
    if not data:
        return ""
    return shorten(json.dumps(data, separators=(",", ":"), ensure_ascii=False), MAX_INPUT)


@dataclass(frozen=True, slots=True)
class EventLine:
    """One rendered line: when, what kind, and a short text."""

    time: str
    kind: str
    text: str

    def plain(self) -> str:
        return f"{self.time}  {self.kind:<11} {self.text}".rstrip()


def event_text(event: AgentEvent) -> str | None:
    """The short text of a self-contained event; ``None`` for a heartbeat (not shown).

    Message fragments are rendered by :class:`EventRenderer`, which joins them; here a
    message is just its own text.
    """
    payload = event.payload
    match payload:
        case InitPayload():
            bits = [f"session {payload.session_id}" if payload.session_id else "new session"]
            if payload.model:
                bits.append(f"model {payload.model}")
            return ", ".join(bits)
        case MessagePayload():
            return _message_text(payload.role, payload.kind, payload.text)
        case ToolUsePayload():
            return f"{payload.name} {tool_input_summary(payload.input)}".rstrip()
        case ToolResultPayload():
            head = "error" if payload.is_error else "ok"
            return f"{head}: {shorten(payload.output)}" if payload.output else head
        case UsagePayload():
            usage = payload.usage
            tokens = f"{usage.input_tokens} in, {usage.output_tokens} out"
            return (
                tokens if payload.cost_usd is None else f"{tokens}, {format_cost(payload.cost_usd)}"
            )
        case ErrorPayload():
            text = shorten(payload.message)
            return f"{text} ({payload.code})" if payload.code else text
        case ResultPayload():
            result = payload.result
            summary = result_summary(result)
            return f"{summary} | {shorten(result.text)}" if result.text else summary
        case StdoutPayload() | StderrPayload():
            return shorten(payload.line)
        case LifecyclePayload():
            if payload.state == HEARTBEAT:
                return None
            return " ".join([payload.state, *_detail_bits(payload.detail)])
        case RawPayload():
            return f"{payload.reason}: {shorten(event.raw or '')}"
    return None  # pragma: no cover - the payload union is exhaustive


def _message_text(role: str, kind: str, text: str) -> str:
    prefix = "" if (role, kind) == ("assistant", "text") else f"[{role} {kind}] "
    return prefix + shorten(text)


def _detail_bits(detail: dict[str, JsonValue]) -> list[str]:
    return [f"{key}={shorten(str(detail[key]), 60)}" for key in _DETAIL_KEYS if key in detail]


def is_worker_stopped(event: AgentEvent) -> bool:
    """Whether ``event`` is the worker's final ``stopped`` lifecycle event."""
    payload = event.payload
    return isinstance(payload, LifecyclePayload) and payload.state == STOPPED


@dataclass
class _Pending:
    event: AgentEvent
    text: str


class EventRenderer:
    """Turns a worker's events, in order, into display lines (see the module doc)."""

    def __init__(self) -> None:
        self._pending: dict[str | None, _Pending] = {}

    def feed(self, event: AgentEvent) -> list[EventLine]:
        """The lines ``event`` completes: none for a fragment or a heartbeat, usually one."""
        payload = event.payload
        if isinstance(payload, MessagePayload):
            key = payload.message_id
            if payload.delta:
                pending = self._pending.get(key)
                if pending is None:
                    self._pending[key] = _Pending(event, payload.text)
                else:
                    pending.text += payload.text
                return []
            # The full message supersedes its fragments; other messages' fragments first.
            self._pending.pop(key, None)
            return [*self.flush(), _line(event, event_text(event) or "")]
        text = event_text(event)
        if text is None:
            return []
        return [*self.flush(), _line(event, text)]

    def flush(self) -> list[EventLine]:
        """Lines of the fragments not yet shown (call at the end of a stream)."""
        lines = []
        for pending in self._pending.values():
            payload = pending.event.payload
            assert isinstance(payload, MessagePayload)  # only messages are pending
            lines.append(
                _line(pending.event, _message_text(payload.role, payload.kind, pending.text))
            )
        self._pending.clear()
        return lines


def _line(event: AgentEvent, text: str) -> EventLine:
    time = event.ts.astimezone().strftime("%H:%M:%S")
    return EventLine(time=time, kind=event.type.value, text=text)
