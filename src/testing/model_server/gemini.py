"""Gemini API (``POST /v1beta/models/{model}:streamGenerateContent?alt=sse``), as Gemini
CLI calls it; ``:generateContent`` is the non-streaming form.

Each SSE event is one ``GenerateContentResponse``: ``candidates[0].content.parts`` holds
text or a whole ``functionCall`` (Gemini does not stream arguments). Like the real API,
the last chunk carries content *and* ``finishReason`` plus ``usageMetadata``: Gemini CLI
rejects a stream whose final chunk has no finish reason, or that produced no content, so
the writer holds one part back to attach them. An error after output started is a chunk
holding only ``error``, which the SDK raises.
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
    sse,
)
from codeyard.testing.model_server.scenario import HttpError, ToolCall, count_runs

_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def _usage(plan: Plan) -> JsonObject:
    usage = plan.usage
    return {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": usage.output_tokens,
        "totalTokenCount": usage.input_tokens + usage.output_tokens,
    }


def _response(plan: Plan, response_id: str, parts: list[JsonObject], finish: bool) -> JsonObject:
    candidate: JsonObject = {"content": {"role": "model", "parts": parts}, "index": 0}
    response: JsonObject = {
        "candidates": [candidate],
        "modelVersion": plan.model,
        "responseId": response_id,
    }
    if finish:
        candidate["finishReason"] = "STOP"
        response["usageMetadata"] = _usage(plan)
    return response


class _Writer(StreamWriter):
    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self._response_id = uuid.uuid4().hex[:24]
        self._pending: JsonObject | None = None

    def _send(self, part: JsonObject | None, *, finish: bool) -> bytes:
        parts = [part] if part is not None else []
        return sse(_response(self.plan, self._response_id, parts, finish))

    def flush(self) -> Iterator[bytes]:
        if self._pending is not None:
            yield self._send(self._pending, finish=False)
            self._pending = None

    def open(self) -> Iterator[bytes]:
        # Gemini has no opening event: the first content chunk starts the stream.
        return iter(())

    def text(self, chunk: str) -> Iterator[bytes]:
        yield from self.flush()
        self._pending = {"text": chunk}

    def tool_call(self, call_id: str, call: ToolCall) -> Iterator[bytes]:
        yield from self.flush()
        self._pending = {"functionCall": {"name": call.name, "args": dict(call.arguments)}}

    def error(self, error: HttpError) -> Iterator[bytes]:
        yield from self.flush()
        yield sse(error.body or Gemini().error_body(error.status, error.message))

    def close(self) -> Iterator[bytes]:
        part, self._pending = self._pending, None
        # An empty text part keeps the final chunk well-formed when the turn had no output.
        yield self._send(part if part is not None else {"text": ""}, finish=True)


class Gemini(Dialect):
    name = "gemini"

    def model_turns(self, body: JsonObject) -> int:
        contents = body.get("contents") or []
        return count_runs([isinstance(c, dict) and c.get("role") == "model" for c in contents])

    def writer(self, plan: Plan) -> StreamWriter:
        return _Writer(plan)

    def complete(self, plan: Plan) -> JsonObject:
        flat = collect(plan, "")
        parts: list[JsonObject] = [{"text": flat.text}] if flat.text else []
        parts += [
            {"functionCall": {"name": call.name, "args": dict(call.arguments)}}
            for _, call in flat.calls
        ]
        return _response(plan, uuid.uuid4().hex[:24], parts or [{"text": ""}], finish=True)

    def error_body(self, status: int, message: str | None) -> JsonObject:
        state = _STATUSES.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        return {"error": {"code": status, "message": message or state, "status": state}}
