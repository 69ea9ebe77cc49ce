"""Normalize ``gemini --output-format stream-json`` stdout into domain payloads.

Gemini CLI 0.61 prints ``init``, ``message`` (user echo, then assistant text as ``delta``
fragments only), ``tool_use``, ``tool_result``, ``error`` (severity warning/error) and one
final ``result`` (status success/error, ``stats`` with token counts). The event shapes are
those of gemini-cli ``packages/core/src/output/types.ts`` as seen in the recorded
transcripts.

Gemini never prints an assistant message whole, while the domain says a ``delta`` is a
fragment of a later full message. The parser therefore assembles the fragments and emits the
full message (same ``message_id``, no raw line of its own) as soon as something other than a
fragment arrives: a tool call, its result, or the final ``result``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from codeyard.adapters.cli.types import Parsed
from codeyard.domain.agent import AgentResult, ResultStatus, TokenUsage
from codeyard.domain.errors import CodeyardError
from codeyard.domain.events import (
    ErrorPayload,
    EventPayload,
    InitPayload,
    MessagePayload,
    RawPayload,
    ResultPayload,
    ToolResultPayload,
    ToolUsePayload,
    UsagePayload,
)

PROVIDER = "gemini"
_API_ERROR = "[API Error: "


def _str(data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key)
    return value if isinstance(value, str) else default


def _count(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None  # 1e999 parses as inf (and int() of it raises)
    return max(0, int(value))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def usage_from(stats: dict[str, Any]) -> TokenUsage:
    """``input_tokens`` includes the cached part; ``input`` is the uncached rest."""
    cached = _count(stats, "cached") or 0
    uncached = _count(stats, "input")
    if uncached is None:
        uncached = max(0, (_count(stats, "input_tokens") or 0) - cached)
    return TokenUsage(
        input_tokens=uncached,
        output_tokens=_count(stats, "output_tokens") or 0,
        cache_read_tokens=cached,
    )


class GeminiParser:
    """Stateful parser for one Gemini CLI stream-json run; never raises."""

    def __init__(self, *, model: str | None = None, cwd: str | None = None) -> None:
        self._model = model
        self._cwd = cwd
        self._session_id: str | None = None
        self._fragments: list[str] = []
        self._messages = 0
        self._last_text = ""
        self._turns = 0
        # Counts model round trips: one at the start, one after each batch of tool results.
        self._awaiting_model = True
        self._open_tools: set[str] = set()
        self._finished = False

    @property
    def session_id(self) -> str | None:
        return self._session_id

    def feed(self, line: str) -> list[Parsed]:
        if not line.strip():
            return []
        try:
            data = json.loads(line)
        except (ValueError, RecursionError):  # deep nesting makes json.loads recurse out
            return [Parsed(RawPayload(reason="not json"), line)]
        if not isinstance(data, dict):
            return [Parsed(RawPayload(reason="not a json object"), line)]
        kind = _str(data, "type")
        flushed: list[Parsed] = []
        try:
            if kind in ("tool_use", "tool_result", "result"):
                flushed = self._flush()
            payloads = self._map(kind, data)
        # ValidationError is a ValueError; a domain model's own check raises a CodeyardError
        # (InvalidRequest: a tool input nested deeper than pydantic validates, say).
        except (TypeError, ValueError, KeyError, AttributeError, CodeyardError):
            payloads = [RawPayload(reason=f"malformed {kind!r} event")]
        return [*flushed, *(Parsed(payload, line) for payload in payloads)]

    def _message_id(self) -> str:
        return f"{self._session_id or 'gemini'}-m{self._messages}"

    def _flush(self) -> list[Parsed]:
        """The full assistant message assembled from the fragments so far, if any."""
        if not self._fragments:
            return []
        text = "".join(self._fragments)
        message = MessagePayload(text=text, message_id=self._message_id())
        self._fragments = []
        self._messages += 1
        self._last_text = text
        return [Parsed(message, None)]

    def _model_spoke(self) -> None:
        if self._awaiting_model:
            self._awaiting_model = False
            self._turns += 1

    def _map(self, kind: str, data: dict[str, Any]) -> list[EventPayload]:
        if kind == "init":
            session_id = data["session_id"]
            if not isinstance(session_id, str) or not session_id:
                raise TypeError("session_id")
            self._session_id = session_id
            model = _str(data, "model") or self._model
            return [InitPayload(session_id=session_id, model=model, cwd=self._cwd)]
        if kind == "message":
            return self._message(data)
        if kind == "tool_use":
            tool_id = data["tool_id"]
            if not isinstance(tool_id, str) or not tool_id:
                raise TypeError("tool_id")
            self._model_spoke()
            self._open_tools.add(tool_id)
            return [
                ToolUsePayload(
                    tool_use_id=tool_id,
                    name=_str(data, "tool_name") or "unknown",
                    input=_dict(data.get("parameters")),
                )
            ]
        if kind == "tool_result":
            return [self._tool_result(data)]
        if kind == "error":
            return [
                ErrorPayload(
                    message=_str(data, "message") or "error", code=_str(data, "severity") or None
                )
            ]
        if kind == "result":
            return self._result(data)
        return [RawPayload(reason=f"unknown event type {kind!r}")]

    def _message(self, data: dict[str, Any]) -> list[EventPayload]:
        content = data["content"]
        if not isinstance(content, str):
            raise TypeError("content")
        role = _str(data, "role")
        if role == "user":
            return [MessagePayload(role="user", text=content)]
        if role != "assistant":
            return [RawPayload(reason=f"message with unknown role {role!r}")]
        self._model_spoke()
        if data.get("delta") is True:
            self._fragments.append(content)
            return [MessagePayload(text=content, delta=True, message_id=self._message_id())]
        # A whole message (not printed by 0.61, but the schema allows it).
        self._fragments.append(content)
        return [flushed.payload for flushed in self._flush()]

    def _tool_result(self, data: dict[str, Any]) -> ToolResultPayload:
        tool_id = data["tool_id"]
        if not isinstance(tool_id, str) or not tool_id:
            raise TypeError("tool_id")
        self._open_tools.discard(tool_id)
        if not self._open_tools:
            self._awaiting_model = True
        ok = _str(data, "status") == "success"
        output = _str(data, "output")
        if not output:
            output = _str(_dict(data.get("error")), "message")
        return ToolResultPayload(tool_use_id=tool_id, output=output, is_error=not ok)

    def _result(self, data: dict[str, Any]) -> list[EventPayload]:
        if self._finished:
            return [RawPayload(reason="result after the result")]
        self._finished = True
        stats = _dict(data.get("stats"))
        usage = usage_from(stats)
        status_text = _str(data, "status")
        error = _dict(data.get("error"))
        status = ResultStatus.SUCCESS if status_text == "success" else ResultStatus.ERROR
        duration_ms = _count(stats, "duration_ms") or 0
        result = AgentResult(
            status=status,
            provider=PROVIDER,
            session_id=self._session_id,
            text=self._last_text,
            usage=usage,
            turns=self._turns,
            duration_s=duration_ms / 1000,
            error=None if status is ResultStatus.SUCCESS else _error_message(error, status_text),
            terminal_reason=_terminal_reason(error, status_text),
        )
        payloads: list[EventPayload] = [UsagePayload(usage=usage)] if stats else []
        return [*payloads, ResultPayload(result=result)]


def _terminal_reason(error: dict[str, Any], status: str) -> str | None:
    """The error's type; for model API failures (which 0.61 types ``unknown``, with the
    response body in the message as ``[API Error: <body>]``) ``api_error_<HTTP status>``."""
    kind = _str(error, "type")
    message = _str(error, "message")
    if message.startswith(_API_ERROR):
        body = message[len(_API_ERROR) :].split("]\n", 1)[0].removesuffix("]")
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError, RecursionError):
            return "api_error"
        return f"api_error_{code}" if isinstance(code, int) else "api_error"
    return kind or status or None


def _error_message(error: dict[str, Any], status: str) -> str:
    message = _str(error, "message")
    if message:
        return message
    return f"gemini reported status {status!r}" if status else "gemini reported no status"
