"""What the scripted model says: steps, turns, and the scenario choosing among them.

A :class:`Scenario` is a list of turns; a turn is the list of :data:`Step` one model
response plays. The server picks the turn *statelessly* from the request body (see
:meth:`Scenario.select`): turn ``n`` answers a conversation that already holds ``n`` model
responses. Requests that are not the main conversation (title generation, quota probes...)
get :attr:`Scenario.side_reply`; requests past the last turn get :attr:`Scenario.exhausted`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Text:
    """Assistant text, streamed in deltas of ``chunk_size`` characters (not bytes, so
    multi-byte characters are never split); ``chunk_size=0`` sends it in one delta."""

    text: str
    chunk_size: int = 20

    def chunks(self) -> list[str]:
        if self.chunk_size <= 0 or len(self.text) <= self.chunk_size:
            return [self.text]
        size = self.chunk_size
        return [self.text[i : i + size] for i in range(0, len(self.text), size)]


@dataclass(frozen=True)
class ToolCall:
    """A call of the CLI's tool ``name`` with JSON ``arguments``.

    Tool names and argument shapes differ per CLI: see :mod:`.tools` for helpers.
    ``call_id`` defaults to an id derived from the turn and position, so a retried request
    gets the same id and ids never repeat within one conversation.
    """

    name: str
    arguments: Mapping[str, Any]
    call_id: str | None = None

    def arguments_json(self) -> str:
        return json.dumps(dict(self.arguments), ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class HttpError:
    """Fail with HTTP ``status``. As a turn's first output step it is the response status
    (``body`` defaults to the dialect's own error JSON); after output has started it
    becomes the dialect's in-stream error event (headers are already sent).

    The CLIs retry 429/5xx, so a stateless error is served again on every retry. The
    header ``x-should-retry: false`` stops retries of the Stainless SDKs (Claude Code);
    ``retry-after-ms: 0`` makes them retry at once.
    """

    status: int
    body: Mapping[str, Any] | None = None
    message: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stall:
    """Stop sending mid-stream but keep the connection open, for ``seconds`` (forever by
    default) or until the client disconnects or the server stops. Response headers and
    the stream's opening events are sent first, so the client is really mid-stream."""

    seconds: float = math.inf


@dataclass(frozen=True)
class Delay:
    """Pause ``seconds``. As a turn's first step it delays the response headers (a slow
    model); elsewhere it is a pause between two events (slow streaming)."""

    seconds: float


Step = Text | ToolCall | HttpError | Stall | Delay


@dataclass(frozen=True)
class Usage:
    """Token counts reported with every response (the CLIs show or sum them)."""

    input_tokens: int = 100
    output_tokens: int = 40


TurnKind = Literal["main", "side", "exhausted"]


@dataclass(frozen=True)
class Selection:
    """The turn chosen for one request, and why."""

    kind: TurnKind
    index: int
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Scenario:
    """The script: ``turns[n]`` answers a conversation holding ``n`` model responses.

    Why stateless: a CLI retries, resumes in a new process, and sends side requests in an
    order we do not control; a counter in the server would drift on any of these, while
    the history in the body says exactly where the conversation is.
    """

    turns: Sequence[Sequence[Step]]
    side_reply: Sequence[Step] = (Text("OK", chunk_size=0),)
    exhausted: Sequence[Step] = (Text("(scenario exhausted)", chunk_size=0),)
    usage: Usage = field(default_factory=Usage)
    #: Overrides the dialect's side-request rule: ``is_side(dialect_name, body)``.
    is_side: Callable[[str, dict[str, Any]], bool] | None = None

    def select(self, *, model_turns: int, side: bool) -> Selection:
        """Main turn ``model_turns`` (or the side / exhausted reply)."""
        if side:
            return Selection("side", model_turns, tuple(self.side_reply))
        if model_turns < len(self.turns):
            return Selection("main", model_turns, tuple(self.turns[model_turns]))
        return Selection("exhausted", model_turns, tuple(self.exhausted))

    @classmethod
    def text(cls, *answers: str) -> Scenario:
        """One plain-text turn per answer."""
        return cls(turns=[[Text(a)] for a in answers])


def count_runs(roles: Sequence[bool]) -> int:
    """Number of maximal runs of ``True``: consecutive model items are one response
    (a text item followed by tool calls, parallel calls) and count once."""
    runs = 0
    previous = False
    for is_model in roles:
        if is_model and not previous:
            runs += 1
        previous = is_model
    return runs
