"""Anthropic Messages API (``POST /v1/messages``), as Claude Code and Droid call it.

Streaming follows the documented event order: ``message_start``, per content block
``content_block_start`` / ``content_block_delta`` (``text_delta`` or ``input_json_delta``)
/ ``content_block_stop``, then ``message_delta`` (stop reason, usage) and
``message_stop``. An error after output started is an ``event: error`` as the real API
sends for mid-stream overloads.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from codeyard.testing.model_server.base import (
    Dialect,
    JsonObject,
    Plan,
    StreamWriter,
    collect,
    has_tool_calls,
    split_json,
    sse,
)
from codeyard.testing.model_server.scenario import HttpError, ToolCall, count_runs

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def _error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def _usage(plan: Plan, *, output: int) -> JsonObject:
    return {
        "input_tokens": plan.usage.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output,
    }


class _Writer(StreamWriter):
    id_prefix = "toolu_"

    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self._index = 0
        self._text_open = False

    def _event(self, event: str, data: JsonObject) -> bytes:
        return sse({"type": event, **data}, event=event)

    def open(self) -> Iterator[bytes]:
        message: JsonObject = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": self.plan.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(self.plan, output=1),
        }
        yield self._event("message_start", {"message": message})
        yield self._event("ping", {})

    def _close_text(self) -> Iterator[bytes]:
        if self._text_open:
            yield self._event("content_block_stop", {"index": self._index})
            self._index += 1
            self._text_open = False

    def text(self, chunk: str) -> Iterator[bytes]:
        if not self._text_open:
            block = {"type": "text", "text": ""}
            yield self._event("content_block_start", {"index": self._index, "content_block": block})
            self._text_open = True
        delta = {"type": "text_delta", "text": chunk}
        yield self._event("content_block_delta", {"index": self._index, "delta": delta})

    def tool_call(self, call_id: str, call: ToolCall) -> Iterator[bytes]:
        yield from self._close_text()
        block = {"type": "tool_use", "id": call_id, "name": call.name, "input": {}}
        yield self._event("content_block_start", {"index": self._index, "content_block": block})
        for piece in split_json(call.arguments_json()):
            delta = {"type": "input_json_delta", "partial_json": piece}
            yield self._event("content_block_delta", {"index": self._index, "delta": delta})
        yield self._event("content_block_stop", {"index": self._index})
        self._index += 1

    def error(self, error: HttpError) -> Iterator[bytes]:
        body = error.body or Anthropic().error_body(error.status, error.message)
        yield sse(body, event="error")

    def close(self) -> Iterator[bytes]:
        yield from self._close_text()
        stop = "tool_use" if has_tool_calls(self.plan) else "end_turn"
        delta = {"stop_reason": stop, "stop_sequence": None}
        usage = _usage(self.plan, output=self.plan.usage.output_tokens)
        yield self._event("message_delta", {"delta": delta, "usage": usage})
        yield self._event("message_stop", {})


class Anthropic(Dialect):
    name = "anthropic"

    def model_turns(self, body: JsonObject) -> int:
        messages = body.get("messages") or []
        return count_runs([isinstance(m, dict) and m.get("role") == "assistant" for m in messages])

    def writer(self, plan: Plan) -> StreamWriter:
        return _Writer(plan)

    def complete(self, plan: Plan) -> JsonObject:
        flat = collect(plan, _Writer.id_prefix)
        content: list[JsonObject] = []
        if flat.text:
            content.append({"type": "text", "text": flat.text})
        for call_id, call in flat.calls:
            content.append(
                {
                    "type": "tool_use",
                    "id": call_id,
                    "name": call.name,
                    "input": dict(call.arguments),
                }
            )
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": plan.model,
            "content": content,
            "stop_reason": "tool_use" if flat.calls else "end_turn",
            "stop_sequence": None,
            "usage": _usage(plan, output=plan.usage.output_tokens),
        }

    def error_body(self, status: int, message: str | None) -> JsonObject:
        kind = _error_type(status)
        return {"type": "error", "error": {"type": kind, "message": message or kind}}
