"""What every API dialect shares: frames, the step player, SSE encoding.

A dialect turns the steps of a :class:`~.scenario.Selection` into *frames*: encoded SSE
bytes, or a :class:`Pause` the server sleeps through. Frames are produced synchronously;
only the server touches the clock, which keeps the dialects plain, testable functions.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from codeyard.testing.model_server.scenario import (
    Delay,
    HttpError,
    Selection,
    Stall,
    Step,
    Text,
    ToolCall,
    Usage,
)

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Pause:
    """Send nothing for ``seconds``; ``stall`` pauses also end when the server stops."""

    seconds: float
    stall: bool = False


Frame = bytes | Pause


@dataclass(frozen=True)
class Plan:
    """One response to play: the selected steps and what the dialect needs around them."""

    selection: Selection
    model: str
    usage: Usage

    @property
    def steps(self) -> tuple[Step, ...]:
        return self.selection.steps

    def call_id(self, prefix: str, position: int, step: ToolCall) -> str:
        """Stable per (turn, position): a retried request gets the same id, and the turn
        index grows along a conversation, so ids never repeat inside one."""
        if step.call_id is not None:
            return step.call_id
        kind = self.selection.kind[0]
        return f"{prefix}{kind}{self.selection.index:03d}x{position:02d}"


def sse(data: Mapping[str, Any] | str, event: str | None = None) -> bytes:
    """One server-sent event (``data`` JSON-encoded unless already a string)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def split_json(text: str, parts: int = 3) -> list[str]:
    """Cut serialized tool arguments into a few pieces, as real APIs stream them: the
    client must reassemble them before parsing."""
    if len(text) < parts * 2:
        return [text]
    size = -(-len(text) // parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


@dataclass(frozen=True)
class Opening:
    """How a turn starts: the delays before the response headers, then either an error
    status or the index of the first step to stream."""

    delay: float
    error: HttpError | None
    start: int


def opening(steps: tuple[Step, ...]) -> Opening:
    delay = 0.0
    for index, step in enumerate(steps):
        if isinstance(step, Delay):
            delay += step.seconds
        elif isinstance(step, HttpError):
            return Opening(delay, step, index)
        else:
            return Opening(delay, None, index)
    return Opening(delay, None, len(steps))


@dataclass(frozen=True)
class Collected:
    """A turn flattened for a non-streaming reply."""

    pause: float
    text: str
    calls: list[tuple[str, ToolCall]]
    error: HttpError | None


def collect(plan: Plan, id_prefix: str) -> Collected:
    pause = 0.0
    texts: list[str] = []
    calls: list[tuple[str, ToolCall]] = []
    for position, step in enumerate(plan.steps):
        if isinstance(step, Delay | Stall):
            pause += step.seconds
        elif isinstance(step, Text):
            texts.append(step.text)
        elif isinstance(step, ToolCall):
            calls.append((plan.call_id(id_prefix, position, step), step))
        else:
            return Collected(pause, "".join(texts), calls, step)
    return Collected(pause, "".join(texts), calls, None)


class StreamWriter(ABC):
    """The per-dialect event shapes; :meth:`play` supplies the order and the pauses."""

    #: Tool call ids start with this (``toolu_``, ``call_``...).
    id_prefix = "call_"

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    @abstractmethod
    def open(self) -> Iterator[bytes]:
        """Events starting the response (sent before the first output or stall)."""

    @abstractmethod
    def text(self, chunk: str) -> Iterator[bytes]:
        """One text delta (the writer opens a text block if none is open)."""

    @abstractmethod
    def tool_call(self, call_id: str, call: ToolCall) -> Iterator[bytes]:
        """A complete tool call (closing any open text block first)."""

    @abstractmethod
    def error(self, error: HttpError) -> Iterator[bytes]:
        """An error after output started: the stream ends after it."""

    @abstractmethod
    def close(self) -> Iterator[bytes]:
        """Events ending a successful response (stop reason, usage, terminator)."""

    def flush(self) -> Iterator[bytes]:
        """Send anything held back, before a pause (writers that buffer override it)."""
        return iter(())

    def play(self, start: int = 0) -> Iterator[Frame]:
        """All frames of the response, from step ``start`` (the server has already
        waited out the leading delays before sending headers)."""
        opened = False
        for position, step in enumerate(self.plan.steps):
            if position < start:
                continue
            if isinstance(step, Delay):
                yield from self.flush()
                yield Pause(step.seconds)
                continue
            if not opened:
                yield from self.open()
                opened = True
            if isinstance(step, Stall):
                yield from self.flush()
                yield Pause(step.seconds, stall=True)
            elif isinstance(step, Text):
                for chunk in step.chunks():
                    yield from self.text(chunk)
            elif isinstance(step, ToolCall):
                yield from self.tool_call(self.plan.call_id(self.id_prefix, position, step), step)
            else:
                yield from self.error(step)
                return
        if not opened:
            yield from self.open()
        yield from self.close()


def has_tool_calls(plan: Plan) -> bool:
    return any(isinstance(step, ToolCall) for step in plan.steps)


class Dialect(ABC):
    """One model API as the server needs it: where the conversation stands, and how to
    answer. Bodies are the parsed JSON of the request."""

    #: Short name recorded with each request (``anthropic``, ``chat``...).
    name: str

    @abstractmethod
    def model_turns(self, body: JsonObject) -> int:
        """Model responses already in the conversation history of ``body``."""

    def is_side_request(self, body: JsonObject) -> bool:
        """Not the main conversation. Every CLI declares its tools on the main
        conversation and none on its helper calls (titles, quota probes), which is the one
        signal shared by all five; a scenario can override it."""
        return not body.get("tools")

    @abstractmethod
    def writer(self, plan: Plan) -> StreamWriter:
        """The streaming writer for one response."""

    @abstractmethod
    def complete(self, plan: Plan) -> JsonObject:
        """The non-streaming reply (errors and pauses are the server's business)."""

    @abstractmethod
    def error_body(self, status: int, message: str | None) -> JsonObject:
        """This API's error JSON for ``status``."""
