"""OpenAI Responses API (``POST /v1/responses``), as Codex (and Droid's ``openai``
provider) call it.

Streaming follows the public event shapes: ``response.created``, ``response.in_progress``;
per output item ``response.output_item.added``, then for a message
``response.content_part.added`` / ``response.output_text.delta`` /
``response.output_text.done`` / ``response.content_part.done``, for a function call
``response.function_call_arguments.delta`` / ``.done``; ``response.output_item.done``;
finally ``response.completed`` carrying the whole output and the usage. Codex builds its
history from ``output_item.done`` and ends the turn only on ``response.completed``. An
error after output started is ``response.failed``.
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
    split_json,
    sse,
)
from codeyard.testing.model_server.openai_chat import openai_error_body
from codeyard.testing.model_server.scenario import HttpError, ToolCall, count_runs

# Input item types produced by the model (everything else is user, developer or tool output).
_MODEL_ITEM_TYPES = frozenset(
    {
        "function_call",
        "custom_tool_call",
        "local_shell_call",
        "reasoning",
        "web_search_call",
        "file_search_call",
        "computer_call",
        "code_interpreter_call",
        "image_generation_call",
        "mcp_call",
    }
)


def _is_model_item(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    kind = item.get("type", "message")
    if kind == "message":
        return item.get("role") == "assistant"
    return kind in _MODEL_ITEM_TYPES


def _usage(plan: Plan) -> JsonObject:
    usage = plan.usage
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _message_item(item_id: str, text: str, status: str) -> JsonObject:
    content = [{"type": "output_text", "text": text, "annotations": []}] if text else []
    return {
        "type": "message",
        "id": item_id,
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _call_item(
    item_id: str, call_id: str, call: ToolCall, arguments: str, status: str
) -> JsonObject:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": call.name,
        "arguments": arguments,
        "status": status,
    }


class _Writer(StreamWriter):
    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self._response_id = f"resp_{uuid.uuid4().hex[:24]}"
        self._created = int(time.time())
        self._sequence = 0
        self._output: list[JsonObject] = []
        self._text_id: str | None = None
        self._text = ""

    def _event(self, event: str, **data: Any) -> bytes:
        frame = sse({"type": event, "sequence_number": self._sequence, **data}, event=event)
        self._sequence += 1
        return frame

    def _response(self, status: str, **extra: Any) -> JsonObject:
        return {
            "id": self._response_id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "model": self.plan.model,
            "output": list(self._output),
            **extra,
        }

    def open(self) -> Iterator[bytes]:
        yield self._event("response.created", response=self._response("in_progress"))
        yield self._event("response.in_progress", response=self._response("in_progress"))

    def _close_text(self) -> Iterator[bytes]:
        if self._text_id is None:
            return
        item_id, index = self._text_id, len(self._output)
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        part = {"type": "output_text", "text": self._text, "annotations": []}
        yield self._event("response.output_text.done", **where, text=self._text)
        yield self._event("response.content_part.done", **where, part=part)
        item = _message_item(item_id, self._text, "completed")
        yield self._event("response.output_item.done", output_index=index, item=item)
        self._output.append(item)
        self._text_id, self._text = None, ""

    def text(self, chunk: str) -> Iterator[bytes]:
        index = len(self._output)
        if self._text_id is None:
            self._text_id = f"msg_{uuid.uuid4().hex[:24]}"
            item = _message_item(self._text_id, "", "in_progress")
            yield self._event("response.output_item.added", output_index=index, item=item)
            part = {"type": "output_text", "text": "", "annotations": []}
            yield self._event(
                "response.content_part.added",
                item_id=self._text_id,
                output_index=index,
                content_index=0,
                part=part,
            )
        self._text += chunk
        yield self._event(
            "response.output_text.delta",
            item_id=self._text_id,
            output_index=index,
            content_index=0,
            delta=chunk,
        )

    def tool_call(self, call_id: str, call: ToolCall) -> Iterator[bytes]:
        yield from self._close_text()
        index, item_id = len(self._output), f"fc_{uuid.uuid4().hex[:24]}"
        arguments = call.arguments_json()
        added = _call_item(item_id, call_id, call, "", "in_progress")
        yield self._event("response.output_item.added", output_index=index, item=added)
        for piece in split_json(arguments):
            yield self._event(
                "response.function_call_arguments.delta",
                item_id=item_id,
                output_index=index,
                delta=piece,
            )
        yield self._event(
            "response.function_call_arguments.done",
            item_id=item_id,
            output_index=index,
            arguments=arguments,
        )
        item = _call_item(item_id, call_id, call, arguments, "completed")
        yield self._event("response.output_item.done", output_index=index, item=item)
        self._output.append(item)

    def error(self, error: HttpError) -> Iterator[bytes]:
        body = error.body or openai_error_body(error.status, error.message)
        detail = body.get("error", body)
        failure = {
            "code": detail.get("code") or detail.get("type"),
            "message": detail.get("message"),
        }
        yield self._event("response.failed", response=self._response("failed", error=failure))

    def close(self) -> Iterator[bytes]:
        yield from self._close_text()
        done = self._response("completed", usage=_usage(self.plan))
        yield self._event("response.completed", response=done)


class OpenAIResponses(Dialect):
    name = "responses"

    def model_turns(self, body: JsonObject) -> int:
        items = body.get("input")
        if not isinstance(items, list):
            return 0
        return count_runs([_is_model_item(item) for item in items])

    def writer(self, plan: Plan) -> StreamWriter:
        return _Writer(plan)

    def complete(self, plan: Plan) -> JsonObject:
        flat = collect(plan, _Writer.id_prefix)
        output: list[JsonObject] = []
        if flat.text:
            output.append(_message_item(f"msg_{uuid.uuid4().hex[:24]}", flat.text, "completed"))
        for call_id, call in flat.calls:
            item_id = f"fc_{uuid.uuid4().hex[:24]}"
            output.append(_call_item(item_id, call_id, call, call.arguments_json(), "completed"))
        return {
            "id": f"resp_{uuid.uuid4().hex[:24]}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": plan.model,
            "output": output,
            "usage": _usage(plan),
        }

    def error_body(self, status: int, message: str | None) -> JsonObject:
        return openai_error_body(status, message)
