"""Claude Code ``--output-format stream-json --verbose`` lines -> normalized payloads.

One JSON object per stdout line, told apart by ``type`` (and ``subtype`` for ``system``).
The mapping, as recorded from claude 2.1.330 (/work/shared/agent-transcripts/claude):

* ``system/init`` -> :class:`InitPayload` (session id, model, cwd, tools).
* ``system/api_retry`` -> :class:`ErrorPayload` ``retryable=True``: the CLI is retrying a
  failed model call by itself; the run goes on.
* any other ``system`` subtype (``status``, ``task_started``, ``task_notification``,
  ``compact_boundary``, hooks...) -> :class:`LifecyclePayload` with ``state`` = subtype.
* ``assistant`` -> one payload per content block: ``text`` -> :class:`MessagePayload`,
  ``thinking`` -> ``MessagePayload(kind="thinking")``, ``tool_use`` -> :class:`ToolUsePayload`.
  An API error the CLI turned into a synthetic assistant message (``is_api_error_message``)
  becomes an :class:`ErrorPayload` instead: it is not the agent speaking.
* ``user`` -> ``tool_result`` blocks -> :class:`ToolResultPayload`; text -> user message.
* ``stream_event`` (``--include-partial-messages``) -> text/thinking deltas become
  ``MessagePayload(delta=True)``. The framing events (``message_start``,
  ``content_block_start/stop``, ``message_delta``, ``message_stop``, tool-input and
  signature deltas) yield nothing: everything they carry arrives complete in the
  ``assistant`` line that follows, so emitting them would only duplicate it.
* ``rate_limit_event`` -> ``status: "rejected"`` is an :class:`ErrorPayload` (code
  ``rate_limited``, retryable); ``allowed``/``allowed_warning`` is informational and becomes
  ``LifecyclePayload(state="rate_limit")``. The CLI keeps running either way; the terminal
  ``result`` says whether the run failed.
* ``result`` -> a :class:`UsagePayload` (cumulative tokens incl. cache, cost) followed by
  the :class:`ResultPayload`. ``is_error: true`` is an error even under
  ``subtype: "success"`` (an API error arrives that way); ``terminal_reason`` ``aborted_*``
  (what SIGINT produces) is ``cancelled``.
* anything else (unknown ``type``, not JSON, not an object, a known type with an
  unexpected shape) -> :class:`RawPayload` with the line kept in ``Parsed.raw``.

Every :class:`Parsed` carries the line it came from. Blank lines yield nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from codeyard.adapters.claude._decode import decode_line
from codeyard.adapters.claude._fields import (
    PROVIDER,
    JsonObject,
    as_dict,
    as_str,
    required_str,
    result_from,
    retryable,
    status_code,
    tool_output,
    usage_from,
)
from codeyard.adapters.cli.types import Parsed
from codeyard.domain.events import (
    ErrorPayload,
    EventPayload,
    InitPayload,
    LifecyclePayload,
    MessagePayload,
    RawPayload,
    ResultPayload,
    ToolResultPayload,
    ToolUsePayload,
    UsagePayload,
)
from codeyard.domain.trusted import trusted

__all__ = ["PROVIDER", "ClaudeStreamParser", "tool_output", "usage_from"]

#: ``stream_event`` types that only frame content repeated by the ``assistant`` line.
_FRAMING_EVENTS = frozenset(
    {"message_start", "content_block_start", "content_block_stop", "message_delta", "message_stop"}
)
#: ``isinstance(x, str)`` as a C callable: filter() with it is ~40 % faster than a loop.
_is_str = str.__instancecheck__
#: System fields already in the envelope or meaningless to consumers.
_SYSTEM_NOISE = frozenset({"type", "subtype", "uuid", "session_id"})

# Unvalidated builders (codeyard.domain.trusted) for the payloads of every line: each
# call site passes values of the field's type only, checked just before (isinstance,
# as_str, required_str, the _fields readers) or constants; JSON objects come straight from
# the decoder, so they are ``dict[str, JsonValue]``. tests/unit/test_claude_fast_path.py
# holds every payload of the transcripts and edge cases against its validated twin.
_init = trusted(InitPayload)
_message = trusted(MessagePayload)
_tool_use = trusted(ToolUsePayload)
_tool_result = trusted(ToolResultPayload)
_error = trusted(ErrorPayload)
_lifecycle = trusted(LifecyclePayload)
_usage = trusted(UsagePayload)
_result_payload = trusted(ResultPayload)


class ClaudeStreamParser:
    """Stateful per run: remembers the session id and the last assistant text (the
    fallback answer when a ``result`` line carries none). Never raises."""

    def __init__(self) -> None:
        self._session_id: str | None = None
        self._last_text = ""
        self._message_id: str | None = None

    @property
    def session_id(self) -> str | None:
        return self._session_id

    def feed(self, line: str) -> list[Parsed]:
        if not line.strip():
            return []
        try:
            payloads = self._payloads(line)
        except Exception as exc:
            # The contract is "never raise": a line of a known type with a shape we did not
            # foresee (or a bug here) must not end the run; it survives verbatim as raw.
            payloads = [RawPayload(reason=f"malformed line ({type(exc).__name__})")]
        if len(payloads) == 1:  # most lines: spares the comprehension's frame
            return [Parsed(payloads[0], line)]
        return [Parsed(payload, line) for payload in payloads]

    def _payloads(self, line: str) -> list[EventPayload]:
        try:
            obj = decode_line(line)
        except ValueError:
            return [RawPayload(reason="not json")]
        if not isinstance(obj, dict):
            return [RawPayload(reason="not a json object")]
        session_id = obj.get("session_id")
        if session_id and isinstance(session_id, str):
            self._session_id = session_id
        kind = obj.get("type")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return [RawPayload(reason=f"unknown type {str(kind)[:64]!r}")]
        return handler(self, obj)

    # --- system ----------------------------------------------------------------------------

    def _system(self, obj: JsonObject) -> list[EventPayload]:
        subtype = as_str(obj.get("subtype")) or "system"
        if subtype == "init":
            tools = obj.get("tools")
            return [
                _init(
                    session_id=self._session_id,
                    model=as_str(obj.get("model")),
                    cwd=as_str(obj.get("cwd")),
                    tools=tuple(filter(_is_str, tools)) if isinstance(tools, list) else (),
                )
            ]
        if subtype == "api_retry":
            status = status_code(obj.get("error_status"))
            category = as_str(obj.get("error"))
            attempt, limit = obj.get("attempt"), obj.get("max_retries")
            return [
                _error(
                    message=f"model API error {status or category or 'unknown'}; "
                    f"retry {attempt} of {limit}",
                    code="api_retry",
                    retryable=True,
                )
            ]
        detail = {k: v for k, v in obj.items() if k not in _SYSTEM_NOISE}
        return [_lifecycle(state=subtype.lower(), detail=detail)]

    # --- assistant / user --------------------------------------------------------------------

    def _assistant(self, obj: JsonObject) -> list[EventPayload]:
        message = as_dict(obj.get("message"))
        message_id = as_str(message.get("id"))
        content = message.get("content")
        blocks = content if isinstance(content, list) else []
        if obj.get("is_api_error_message") is True or obj.get("error") is not None:
            return [self._api_error(obj, blocks)]
        payloads: list[EventPayload] = []
        top_level = obj.get("parent_tool_use_id") is None
        for block in blocks:
            payload = self._assistant_block(as_dict(block), message_id)
            payloads.append(payload)
            if top_level and isinstance(payload, MessagePayload) and payload.kind == "text":
                self._last_text = payload.text
        return payloads or [RawPayload(reason="assistant message without content")]

    @staticmethod
    def _assistant_block(block: JsonObject, message_id: str | None) -> EventPayload:
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            return _message(text=block["text"], message_id=message_id)
        if kind == "thinking" and isinstance(block.get("thinking"), str):
            return _message(kind="thinking", text=block["thinking"], message_id=message_id)
        # tool_use, and server_tool_use / mcp_tool_use, which share its shape.
        if isinstance(kind, str) and kind.endswith("tool_use"):
            tool_input = block.get("input")
            return _tool_use(
                tool_use_id=required_str(block, "id"),
                name=required_str(block, "name"),
                input=tool_input if isinstance(tool_input, dict) else {"input": tool_input},
            )
        return RawPayload(reason=f"unknown assistant block {str(kind)[:64]!r}")

    @staticmethod
    def _api_error(obj: JsonObject, blocks: list[Any]) -> EventPayload:
        status = status_code(obj.get("api_error_status"))
        category = as_str(obj.get("error"))
        text = "\n".join(
            b["text"] for b in blocks if isinstance(b, dict) and isinstance(b.get("text"), str)
        )
        code = as_str(obj.get("api_error_type")) or category or "api_error"
        return _error(
            message=text or f"model API error {status or category or 'unknown'}",
            code=code,
            retryable=retryable(status, category),
        )

    def _user(self, obj: JsonObject) -> list[EventPayload]:
        content = as_dict(obj.get("message")).get("content")
        if isinstance(content, str):
            return [_message(role="user", text=content)]
        payloads: list[EventPayload] = []
        for item in content if isinstance(content, list) else []:
            block = as_dict(item)
            kind = block.get("type")
            if kind == "tool_result" or (isinstance(kind, str) and kind.endswith("_tool_result")):
                payloads.append(
                    _tool_result(
                        tool_use_id=required_str(block, "tool_use_id"),
                        output=tool_output(block.get("content")),
                        is_error=block.get("is_error") is True,
                    )
                )
            elif kind == "text" and isinstance(block.get("text"), str):
                payloads.append(_message(role="user", text=block["text"]))
            else:
                payloads.append(RawPayload(reason=f"unknown user block {str(kind)[:64]!r}"))
        return payloads or [RawPayload(reason="user message without content")]

    # --- partial messages ----------------------------------------------------------------------

    def _stream_event(self, obj: JsonObject) -> list[EventPayload]:
        event = as_dict(obj.get("event"))
        kind = event.get("type")
        if kind == "message_start":
            self._message_id = as_str(as_dict(event.get("message")).get("id"))
        message_id = as_str(obj.get("api_message_id")) or self._message_id
        if kind == "content_block_delta":
            delta = as_dict(event.get("delta"))
            text = delta.get("text") if delta.get("type") == "text_delta" else None
            thinking = delta.get("thinking") if delta.get("type") == "thinking_delta" else None
            if isinstance(text, str) and text:
                return [_message(text=text, delta=True, message_id=message_id)]
            if isinstance(thinking, str) and thinking:
                return [_message(kind="thinking", text=thinking, delta=True, message_id=message_id)]
            return []  # tool-input JSON, signatures, citations: repeated in the full message
        if kind in _FRAMING_EVENTS:
            return []
        if kind == "error":
            error = as_dict(event.get("error"))
            category = as_str(error.get("type"))
            return [
                _error(
                    message=as_str(error.get("message")) or "model stream error",
                    code=category or "stream_error",
                    retryable=retryable(None, category) or category == "api_error",
                )
            ]
        return [RawPayload(reason=f"unknown stream event {str(kind)[:64]!r}")]

    # --- rate limits and the result --------------------------------------------------------

    def _rate_limit(self, obj: JsonObject) -> list[EventPayload]:
        info = as_dict(obj.get("rate_limit_info"))
        if info.get("status") == "rejected":
            kind = as_str(info.get("rateLimitType")) or "unknown"
            return [
                _error(
                    message=f"rate limit reached ({kind}); resets at {info.get('resetsAt')}",
                    code="rate_limited",
                    retryable=True,
                )
            ]
        return [_lifecycle(state="rate_limit", detail=info)]

    def _result(self, obj: JsonObject) -> list[EventPayload]:
        result = result_from(obj, session_id=self._session_id, last_text=self._last_text)
        return [
            _usage(usage=result.usage, cost_usd=result.cost_usd),
            _result_payload(result=result),
        ]


#: Line ``type`` -> handler; built once, not per parser (a parser lives one run).
_HANDLERS: dict[str, Callable[[ClaudeStreamParser, JsonObject], list[EventPayload]]] = {
    "system": ClaudeStreamParser._system,
    "assistant": ClaudeStreamParser._assistant,
    "user": ClaudeStreamParser._user,
    "stream_event": ClaudeStreamParser._stream_event,
    "rate_limit_event": ClaudeStreamParser._rate_limit,
    "result": ClaudeStreamParser._result,
}
