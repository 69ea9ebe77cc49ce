"""Factory Droid's ``droid exec --output-format stream-json`` lines -> normalized payloads.

One JSON object per line, discriminated by ``type`` (recorded from droid 0.215.0, see
/work/shared/agent-transcripts/droid):

- ``system``/``init``: session id, model, cwd, tool names -> ``InitPayload``;
- ``message`` (``role`` user|assistant, full ``text``, never deltas) -> ``MessagePayload``;
- ``tool_call`` (``id``, ``toolName``, ``parameters``) -> ``ToolUsePayload``;
- ``tool_result`` (``id``, ``isError``, ``value`` or ``error.message``) -> ``ToolResultPayload``;
- ``error`` (``source`` agent_loop|cli, ``message``) -> ``ErrorPayload``. Droid prints no
  ``completion`` after a failed turn: it ends with ``{"source":"cli","message":"Exec failed"}``
  and exits. That line is its own final word, so it also becomes an ``error`` result whose
  text is the most informative error seen (the model's HTTP error, not "Exec failed");
- ``completion`` (``finalText``, ``numTurns``, ``durationMs``, ``usage``) -> ``UsagePayload``
  then the success ``ResultPayload``.

Anything else (not JSON, not an object, an unknown ``type``, a known type with the wrong
shape) becomes a ``RawPayload`` with the line kept: the parser never raises.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import JsonValue

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

PROVIDER = "droid"

#: HTTP statuses in an error message that mean "the same call may work later".
_RETRYABLE_STATUS = re.compile(r"^\s*(408|409|429|500|502|503|504|529)\b")
_RETRYABLE_WORDS = (
    "overloaded",
    "rate limit",
    "rate_limit",
    "timeout",
    "timed out",
    "connection error",
)

#: Error sources Droid uses for its own last word on a failed ``exec``.
_TERMINAL_ERROR_SOURCES = frozenset({"cli"})


class _Malformed(Exception):
    """A known event type whose fields have the wrong shape (internal to the parser)."""


def _str(obj: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise _Malformed(f"{key!r} is not a string")
    return value


def _number(value: object) -> float:
    """A non-negative finite number, else 0 (counts are informative, never worth a crash)."""
    # bool is an int subclass; a token count of ``true`` is malformed, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    number = float(value)
    return number if 0 <= number < float("inf") else 0.0


def is_retryable(message: str) -> bool:
    """Whether a Droid error message describes a transient model/API failure."""
    lowered = message.lower()
    return bool(_RETRYABLE_STATUS.match(message)) or any(w in lowered for w in _RETRYABLE_WORDS)


def _usage(raw: object) -> TokenUsage:
    if not isinstance(raw, dict):
        return TokenUsage()
    return TokenUsage(
        input_tokens=int(_number(raw.get("input_tokens"))),
        output_tokens=int(_number(raw.get("output_tokens"))),
        cache_read_tokens=int(_number(raw.get("cache_read_input_tokens"))),
        cache_write_tokens=int(_number(raw.get("cache_creation_input_tokens"))),
    )


class DroidStreamParser:
    """Stateful parser for one ``droid exec`` run (implements ``LineParser``)."""

    def __init__(self) -> None:
        self._session_id: str | None = None
        self._turns = 0
        #: The first non-terminal error: the cause a failed turn's result reports.
        self._first_error: str | None = None

    @property
    def session_id(self) -> str | None:
        return self._session_id

    def feed(self, line: str) -> list[Parsed]:
        stripped = line.strip()
        if not stripped:
            return []
        try:
            obj = json.loads(stripped)
        except (ValueError, RecursionError):
            return [Parsed(RawPayload(reason="not json"), line)]
        if not isinstance(obj, dict):
            return [Parsed(RawPayload(reason="not a json object"), line)]
        sid = obj.get("session_id")
        if isinstance(sid, str) and sid:
            self._session_id = sid
        kind = obj.get("type")
        try:
            payloads = self._map(kind, obj)
        except (_Malformed, CodeyardError) as exc:
            # CodeyardError: a domain model refused a value (e.g. InvalidRequest).
            return [Parsed(RawPayload(reason=f"malformed droid {kind} event: {exc}"), line)]
        if payloads is None:
            # Cut: ``type`` may be any JSON value, and the whole line is kept in ``raw``.
            return [Parsed(RawPayload(reason=f"unknown droid event type {kind!r:.60}"), line)]
        return [Parsed(payload, line) for payload in payloads]

    def _map(self, kind: object, obj: dict[str, Any]) -> list[EventPayload] | None:
        if kind == "system":
            return self._system(obj)
        if kind == "message":
            return [self._message(obj)]
        if kind == "tool_call":
            return [self._tool_call(obj)]
        if kind == "tool_result":
            return [self._tool_result(obj)]
        if kind == "error":
            return self._error(obj)
        if kind == "completion":
            return self._completion(obj)
        return None

    def _system(self, obj: dict[str, Any]) -> list[EventPayload] | None:
        if obj.get("subtype") != "init":
            return None
        tools = obj.get("tools")
        return [
            InitPayload(
                session_id=self._session_id,
                model=_str(obj, "model", required=False),
                cwd=_str(obj, "cwd", required=False),
                tools=tuple(t for t in tools if isinstance(t, str))
                if isinstance(tools, list)
                else (),
            )
        ]

    def _message(self, obj: dict[str, Any]) -> MessagePayload:
        role = obj.get("role")
        if role not in ("assistant", "user", "system"):
            raise _Malformed(f"unknown role {role!r}")
        if role == "assistant":
            self._turns += 1
        return MessagePayload(
            role=role, text=_str(obj, "text") or "", message_id=_str(obj, "id", required=False)
        )

    def _tool_call(self, obj: dict[str, Any]) -> ToolUsePayload:
        params = obj.get("parameters")
        tool_input: dict[str, JsonValue]
        if params is None:
            tool_input = {}
        elif isinstance(params, dict):
            tool_input = params
        else:
            tool_input = {"input": params}
        name = _str(obj, "toolName", required=False) or _str(obj, "toolId")
        return ToolUsePayload(tool_use_id=_str(obj, "id") or "", name=name or "", input=tool_input)

    def _tool_result(self, obj: dict[str, Any]) -> ToolResultPayload:
        is_error = obj.get("isError") is True
        value = obj.get("value")
        error = obj.get("error")
        if isinstance(value, str):
            output = value
        elif value is not None:
            output = json.dumps(value, ensure_ascii=False)
        elif isinstance(error, dict) and isinstance(error.get("message"), str):
            output = error["message"]
        else:
            output = ""
        return ToolResultPayload(
            tool_use_id=_str(obj, "id") or "", output=output, is_error=is_error
        )

    def _error(self, obj: dict[str, Any]) -> list[EventPayload]:
        message = _str(obj, "message") or ""
        source = _str(obj, "source", required=False)
        payloads: list[EventPayload] = [
            ErrorPayload(message=message, code=source, retryable=is_retryable(message))
        ]
        if source not in _TERMINAL_ERROR_SOURCES:
            if self._first_error is None:
                self._first_error = message
            return payloads
        # The first agent error is the cause (a 529, a refused key); "Exec failed" is not.
        cause = self._first_error or message
        payloads.append(
            ResultPayload(
                result=AgentResult(
                    status=ResultStatus.ERROR,
                    provider=PROVIDER,
                    session_id=self._session_id,
                    turns=self._turns,
                    error=cause,
                    terminal_reason=message or None,
                )
            )
        )
        return payloads

    def _completion(self, obj: dict[str, Any]) -> list[EventPayload]:
        usage = _usage(obj.get("usage"))
        duration_ms = obj.get("durationMs")
        turns = obj.get("numTurns")
        result = AgentResult(
            status=ResultStatus.SUCCESS,
            provider=PROVIDER,
            session_id=self._session_id,
            text=_str(obj, "finalText", required=False) or "",
            usage=usage,
            turns=int(_number(turns)) if turns is not None else self._turns,
            duration_s=_number(duration_ms) / 1000,
        )
        return [UsagePayload(usage=usage), ResultPayload(result=result)]
