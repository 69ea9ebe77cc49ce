"""Normalize ``codex exec --json`` stdout (one JSON event per line) into domain payloads.

The event shapes are those of codex-rs ``exec/src/exec_events.rs`` as printed by
@openai/codex 0.169 (see the recorded transcripts): ``thread.started``, ``turn.*``,
``item.started/updated/completed`` around typed items, ``item.plan.delta``,
``request_user_input`` and a top-level ``error``.

Codex prints no final ``result`` line of its own: ``turn.completed`` (with usage) is the
success and ``turn.failed`` the failure of an ``exec`` run, so those two become the run's
``ResultPayload``. An interrupted Codex prints neither (SIGINT: exit 1, no final event), and
the run loop synthesizes the result.
"""

from __future__ import annotations

import json
from typing import Any

from codeyard.adapters.cli.types import Parsed
from codeyard.adapters.codex.items import (
    TOOL_ITEMS,
    json_object,
    text_field,
    todo_items,
    tool_call,
    tool_outcome,
)
from codeyard.domain.agent import AgentResult, ResultStatus, TokenUsage
from codeyard.domain.errors import CodeyardError
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

PROVIDER = "codex"


def _count(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    # bool is an int subclass: a JSON true is not a token count.
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def error_text(message: str) -> tuple[str, str | None]:
    """Codex passes the model API's error body through as its message (a JSON document):
    return its human message and machine code when it is one, else the message as is."""
    try:
        body = json.loads(message)
    except (ValueError, RecursionError):  # deep nesting makes json.loads recurse out
        return message, None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return message, None
    text = text_field(error, "message") or message
    code = error.get("code") or error.get("type")
    return text, str(code) if code is not None else None


def usage_from(data: dict[str, Any]) -> TokenUsage:
    """Codex reports OpenAI-style usage: ``input_tokens`` INCLUDES the cached ones. The
    domain's buckets are disjoint (``total`` adds them), so the cached part moves out."""
    cached = _count(data, "cached_input_tokens")
    written = _count(data, "cache_write_input_tokens")
    return TokenUsage(
        input_tokens=max(0, _count(data, "input_tokens") - cached - written),
        output_tokens=_count(data, "output_tokens"),
        cache_read_tokens=cached,
        cache_write_tokens=written,
    )


class CodexParser:
    """Stateful parser for one ``codex exec --json`` run; never raises."""

    def __init__(
        self, *, model: str | None = None, cwd: str | None = None, resumed: str | None = None
    ) -> None:
        self._model = model
        self._cwd = cwd
        self._resumed = resumed
        self._session_id: str | None = None
        self._last_text = ""
        self._usage = TokenUsage()
        self._turns = 0
        # True until the model's next output is seen: counts model round trips, one at the
        # start and one after each batch of tool results.
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
        try:
            payloads = self._map(data)
        # ValidationError is a ValueError; a domain model's own check raises a CodeyardError
        # (InvalidRequest: a tool input nested deeper than pydantic validates, say).
        except (TypeError, ValueError, KeyError, AttributeError, CodeyardError):
            # A known event whose fields have unexpected shapes: keep it, raw.
            return [
                Parsed(RawPayload(reason=f"malformed {text_field(data, 'type')!r} event"), line)
            ]
        return [Parsed(payload, line) for payload in payloads]

    # --- top-level events ------------------------------------------------------------------

    def _map(self, data: dict[str, Any]) -> list[EventPayload]:
        kind = text_field(data, "type")
        if kind == "thread.started":
            thread_id = data["thread_id"]
            if not isinstance(thread_id, str) or not thread_id:
                raise TypeError("thread_id")
            self._session_id = thread_id
            init: list[EventPayload] = [
                InitPayload(session_id=thread_id, model=self._model, cwd=self._cwd)
            ]
            if self._resumed is not None and thread_id != self._resumed:
                # Codex starts a fresh thread, silently, when the resumed id is unknown.
                init.append(
                    ErrorPayload(
                        message=f"session {self._resumed!r} was not found: codex started a "
                        f"new session {thread_id!r} without the earlier conversation",
                        code="resume_not_found",
                    )
                )
            return init
        if kind == "turn.started":
            return [LifecyclePayload(state="turn_started")]
        if kind == "turn.completed":
            return self._turn_completed(json_object(data.get("usage")))
        if kind == "turn.failed":
            message = text_field(json_object(data.get("error")), "message") or "turn failed"
            return self._finish(ResultStatus.ERROR, error=error_text(message)[0])
        if kind == "error":
            text, code = error_text(text_field(data, "message") or "error")
            return [ErrorPayload(message=text, code=code)]
        if kind in ("item.started", "item.updated", "item.completed"):
            item = data["item"]
            if not isinstance(item, dict):
                raise TypeError("item")
            return self._item(kind.removeprefix("item."), item)
        if kind == "item.plan.delta":
            return [
                MessagePayload(
                    text=text_field(data, "delta"),
                    delta=True,
                    message_id=text_field(data, "item_id") or None,
                )
            ]
        if kind == "request_user_input":
            # exec has nobody to answer: the model gets no reply and carries on or stops.
            return [
                ErrorPayload(
                    message="the agent asked for user input, which a headless run cannot give",
                    code="user_input_requested",
                )
            ]
        return [RawPayload(reason=f"unknown event type {kind!r}")]

    def _turn_completed(self, usage_data: dict[str, Any]) -> list[EventPayload]:
        usage = usage_from(usage_data)
        self._usage = self._usage + usage
        return [UsagePayload(usage=usage), *self._finish(ResultStatus.SUCCESS)]

    def _finish(self, status: ResultStatus, *, error: str | None = None) -> list[EventPayload]:
        if self._finished:
            # One run, one result: a second terminal event is kept but not acted on.
            return [RawPayload(reason="terminal event after the result")]
        self._finished = True
        result = AgentResult(
            status=status,
            provider=PROVIDER,
            session_id=self._session_id,
            text=self._last_text,
            usage=self._usage,
            turns=self._turns,
            error=error,
            terminal_reason="turn.completed" if status is ResultStatus.SUCCESS else "turn.failed",
        )
        return [ResultPayload(result=result)]

    # --- items -----------------------------------------------------------------------------

    def _model_spoke(self) -> None:
        if self._awaiting_model:
            self._awaiting_model = False
            self._turns += 1

    def _item(self, phase: str, item: dict[str, Any]) -> list[EventPayload]:
        item_id = text_field(item, "id")
        kind = text_field(item, "type")
        if kind in TOOL_ITEMS:
            return self._tool_item(phase, item_id, kind, item)
        if kind == "error":
            return [ErrorPayload(message=text_field(item, "message") or "error", code="item_error")]
        if kind == "todo_list":
            # The plan as it stands: every phase carries the whole list.
            items = item.get("items")
            return [LifecyclePayload(state="todo_list", detail={"items": todo_items(items)})]
        if phase != "completed":
            # Messages, reasoning and plans arrive whole on completion; the progress lines
            # are kept as lifecycle events so nothing printed is lost.
            return [LifecyclePayload(state=f"item_{phase}", detail={"id": item_id, "type": kind})]
        if kind in ("agent_message", "reasoning", "plan"):
            self._model_spoke()
            text = text_field(item, "text")
            if kind == "agent_message":
                self._last_text = text
            thinking = kind == "reasoning"
            return [
                MessagePayload(
                    text=text, kind="thinking" if thinking else "text", message_id=item_id or None
                )
            ]
        return [RawPayload(reason=f"unknown item type {kind!r}")]

    def _tool_item(
        self, phase: str, item_id: str, kind: str, item: dict[str, Any]
    ) -> list[EventPayload]:
        if not item_id:
            raise ValueError("tool item without id")
        payloads: list[EventPayload] = []
        if item_id not in self._open_tools and phase in ("started", "completed"):
            # file_change items are only ever reported completed: the use is implied.
            self._model_spoke()
            self._open_tools.add(item_id)
            payloads.append(ToolUsePayload(tool_use_id=item_id, **tool_call(kind, item)))
        if phase == "completed":
            self._open_tools.discard(item_id)
            if not self._open_tools:
                self._awaiting_model = True
            output, is_error = tool_outcome(kind, item)
            payloads.append(
                ToolResultPayload(tool_use_id=item_id, output=output, is_error=is_error)
            )
        if not payloads:
            payloads.append(
                LifecyclePayload(state=f"item_{phase}", detail={"id": item_id, "type": kind})
            )
        return payloads
