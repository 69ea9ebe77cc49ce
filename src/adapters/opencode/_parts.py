"""The message parts of one OpenCode turn -> payloads (see :mod:`.events` for the shapes).

Every part is emitted once even though OpenCode re-sends parts on each change (and the
agent replays a whole message list after a reconnect): text once it is complete
(``time.end``), a tool call once it has its input (``running``) and its result once it
ended, usage once per ``step-finish``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from codeyard.domain.agent import TokenUsage
from codeyard.domain.events import (
    ErrorPayload,
    EventPayload,
    LifecyclePayload,
    MessagePayload,
    RawPayload,
    ToolResultPayload,
    ToolUsePayload,
    UsagePayload,
)

#: Parts that describe bookkeeping (snapshots, step boundaries...), not agent output.
_QUIET_PARTS = frozenset({"step-start", "snapshot", "agent", "subtask", "compaction", "file"})


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    """A token count: OpenCode's are JSON numbers (sometimes floats); junk counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(int(value), 0)


def token_usage(tokens: dict[str, Any]) -> TokenUsage:
    """OpenCode ``tokens`` -> TokenUsage; reasoning tokens are billed as output."""
    cache = as_dict(tokens.get("cache"))
    return TokenUsage(
        input_tokens=_count(tokens.get("input")),
        output_tokens=_count(tokens.get("output")) + _count(tokens.get("reasoning")),
        cache_read_tokens=_count(cache.get("read")),
        cache_write_tokens=_count(cache.get("write")),
    )


def _cost(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(float(value), 0.0)


@dataclass(frozen=True)
class TurnSummary:
    text: str
    usage: TokenUsage
    cost_usd: float | None
    steps: int
    finish: str | None


class PartMapper:
    def __init__(self) -> None:
        self._emitted: set[tuple[str, str]] = set()
        self._kinds: dict[str, str] = {}
        self._usage = TokenUsage()
        self._cost: float | None = None
        self._steps = 0
        self._text = ""
        self._finish: str | None = None

    def assistant_message(self, info: dict[str, Any]) -> None:
        finish = info.get("finish")
        if isinstance(finish, str):
            self._finish = finish

    def summary(self) -> TurnSummary:
        return TurnSummary(self._text, self._usage, self._cost, self._steps, self._finish)

    def _once(self, kind: str, key: Any) -> bool:
        """True the first time ``(kind, key)`` is asked about."""
        token = (kind, str(key))
        if token in self._emitted:
            return False
        self._emitted.add(token)
        return True

    def updated(self, part: dict[str, Any], *, user: bool | None) -> list[EventPayload]:
        """One part of the prompt (``user``), of an answer, or of neither (ignored)."""
        kind, part_id = part.get("type"), part.get("id")
        if not isinstance(kind, str) or not isinstance(part_id, str):
            return [RawPayload(reason="malformed")]
        if user is None:
            return []
        self._kinds[part_id] = kind
        if kind in ("text", "reasoning"):
            return self._text_part(part, part_id, user)
        if user:
            return []
        if kind == "tool":
            return self._tool(part)
        if kind == "step-finish":
            return self._step_finish(part, part_id)
        if kind == "patch":
            files = [f for f in part.get("files") or [] if isinstance(f, str)]
            if not files or not self._once("patch", part_id):
                return []
            return [LifecyclePayload(state="files_changed", detail={"files": files})]
        if kind == "retry":
            error = as_dict(as_dict(part.get("error")).get("data"))
            message = str(error.get("message") or "model request failed; retrying")
            return [ErrorPayload(message=message, code="retry", retryable=True)]
        if kind in _QUIET_PARTS:
            return []
        return [RawPayload(reason="unrecognized")]

    def delta(self, props: dict[str, Any]) -> list[EventPayload]:
        part_id, field, delta = props.get("partID"), props.get("field"), props.get("delta")
        if field != "text" or not isinstance(delta, str) or not isinstance(part_id, str):
            return [RawPayload(reason="unrecognized")]
        if not delta:
            return []
        kind = "thinking" if self._kinds.get(part_id) == "reasoning" else "text"
        message_id = props.get("messageID")
        return [
            MessagePayload(
                kind=kind,
                text=delta,
                delta=True,
                message_id=message_id if isinstance(message_id, str) else None,
            )
        ]

    def _text_part(self, part: dict[str, Any], part_id: str, is_user: bool) -> list[EventPayload]:
        text = part.get("text")
        if not isinstance(text, str) or not text:
            return []
        # A user part is the prompt, complete at once; assistant text is complete when it
        # has an end time (until then deltas carry it).
        if not is_user and "end" not in as_dict(part.get("time")):
            return []
        if not self._once("text", part_id):
            return []
        message_id = part.get("messageID")
        kind = "thinking" if part.get("type") == "reasoning" else "text"
        if kind == "text" and not is_user:
            self._text = text
        return [
            MessagePayload(
                role="user" if is_user else "assistant",
                kind=kind,
                text=text,
                message_id=message_id if isinstance(message_id, str) else None,
            )
        ]

    def _tool(self, part: dict[str, Any]) -> list[EventPayload]:
        call_id, name = part.get("callID"), part.get("tool")
        state = as_dict(part.get("state"))
        status = state.get("status")
        if not isinstance(call_id, str) or not isinstance(name, str):
            return [RawPayload(reason="malformed")]
        if status == "pending":
            return []  # the input is still streaming in
        if status not in ("running", "completed", "error"):
            return [RawPayload(reason="unrecognized")]
        out: list[EventPayload] = []
        if self._once("tool_use", call_id):
            raw_input = state.get("input")
            tool_input = raw_input if isinstance(raw_input, dict) else {"input": raw_input}
            out.append(ToolUsePayload(tool_use_id=call_id, name=name, input=tool_input))
        if status != "running" and self._once("tool_result", call_id):
            failed = status == "error"
            output = state.get("error") if failed else state.get("output")
            text = output if isinstance(output, str) else json_text(output)
            out.append(ToolResultPayload(tool_use_id=call_id, output=text, is_error=failed))
        return out

    def _step_finish(self, part: dict[str, Any], part_id: str) -> list[EventPayload]:
        if not self._once("step", part_id):
            return []
        usage = token_usage(as_dict(part.get("tokens")))
        cost = _cost(part.get("cost"))
        self._usage = self._usage + usage
        self._steps += 1
        if cost is not None:
            self._cost = (self._cost or 0.0) + cost
        reason = part.get("reason")
        if isinstance(reason, str):
            self._finish = reason
        return [UsagePayload(usage=usage, cost_usd=cost)]


def json_text(value: Any) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False)
