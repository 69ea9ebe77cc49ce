"""OpenAI Chat Completions (``POST /v1/chat/completions``), as OpenCode and Droid call it.

Streaming sends ``chat.completion.chunk`` objects: the role, ``delta.content`` pieces,
``delta.tool_calls`` (id and name first, then argument pieces under the same ``index``),
a chunk with ``finish_reason``, a usage chunk with empty ``choices`` (what
``stream_options.include_usage`` asks for; clients that did not ask ignore it), then
``data: [DONE]``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

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
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_exceeded", "rate_limit_exceeded"),
}


def openai_error_body(status: int, message: str | None) -> JsonObject:
    """The error JSON shared by both OpenAI APIs."""
    kind, code = _ERROR_TYPES.get(status, ("server_error" if status >= 500 else "api_error", None))
    return {"error": {"message": message or kind, "type": kind, "param": None, "code": code}}


def _usage(plan: Plan) -> JsonObject:
    usage = plan.usage
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


class _Writer(StreamWriter):
    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self._id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self._created = int(time.time())
        self._tool_index = 0

    def _chunk(self, choices: list[JsonObject], **extra: Any) -> bytes:
        return sse(
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self.plan.model,
                "choices": choices,
                **extra,
            }
        )

    def _delta(self, delta: JsonObject, finish: str | None = None) -> bytes:
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": finish}])

    def open(self) -> Iterator[bytes]:
        yield self._delta({"role": "assistant", "content": ""})

    def text(self, chunk: str) -> Iterator[bytes]:
        yield self._delta({"content": chunk})

    def tool_call(self, call_id: str, call: ToolCall) -> Iterator[bytes]:
        index = self._tool_index
        self._tool_index += 1
        head = {"name": call.name, "arguments": ""}
        first = {"index": index, "id": call_id, "type": "function", "function": head}
        yield self._delta({"tool_calls": [first]})
        for piece in split_json(call.arguments_json()):
            more = {"index": index, "function": {"arguments": piece}}
            yield self._delta({"tool_calls": [more]})

    def error(self, error: HttpError) -> Iterator[bytes]:
        yield sse(error.body or openai_error_body(error.status, error.message))

    def close(self) -> Iterator[bytes]:
        finish = "tool_calls" if has_tool_calls(self.plan) else "stop"
        yield self._delta({}, finish)
        yield self._chunk([], usage=_usage(self.plan))
        yield sse("[DONE]")


class OpenAIChat(Dialect):
    name = "chat"

    def model_turns(self, body: JsonObject) -> int:
        messages = body.get("messages") or []
        return count_runs([isinstance(m, dict) and m.get("role") == "assistant" for m in messages])

    def writer(self, plan: Plan) -> StreamWriter:
        return _Writer(plan)

    def complete(self, plan: Plan) -> JsonObject:
        flat = collect(plan, _Writer.id_prefix)
        message: JsonObject = {"role": "assistant", "content": flat.text or None}
        if flat.calls:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json()},
                }
                for call_id, call in flat.calls
            ]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": plan.model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if flat.calls else "stop",
                }
            ],
            "usage": _usage(plan),
        }

    def error_body(self, status: int, message: str | None) -> JsonObject:
        return openai_error_body(status, message)
