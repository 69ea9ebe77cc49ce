"""OpenCode's server events (``GET /event``) -> normalized payloads, for one session's turn.

``opencode serve`` publishes every event of its instance on one SSE stream, one JSON object
per ``data:`` line: ``{"id": "evt_...", "type": "...", "properties": {...}}``. What one turn
of one session looks like (recorded in tests/fixtures/transcripts/opencode/):

* ``message.updated`` (``properties.info``: a user or assistant message; assistant infos
  carry ``tokens``, ``cost``, ``finish`` and, on failure, ``error``), sent again on changes;
* ``message.part.updated`` (``properties.part``): ``text``/``reasoning`` parts start empty,
  grow through ``message.part.delta`` events and are re-sent whole with ``time.end``;
  ``tool`` parts go ``pending`` -> ``running`` (repeated while output streams) ->
  ``completed``/``error``; ``step-finish`` closes one model call with its tokens and cost;
* ``session.status`` (``busy``, ``retry`` with attempt and message, ``idle``),
  ``session.error`` (``APIError``, ``MessageAbortedError``...) and finally ``session.idle``.
  After an abort, late part/message updates and a second ``session.idle`` may follow.

:class:`EventMapper` keeps the turn's state and maps each event's data to zero or more
:class:`~codeyard.adapters.cli.types.Parsed` payloads. Like a ``LineParser`` it never
raises: malformed data becomes a ``RawPayload`` (reason ``malformed``), an event of this
session it does not know a ``RawPayload`` (``unrecognized``), and events of other sessions
or of the server itself (heartbeats, plugin and catalog notices) are ignored. The first
idle after the turn started (see :attr:`EventMapper.armed`) becomes the turn's
``ResultPayload``: status success, error (a ``session.error`` or an assistant message
error) or cancelled (an abort), the last assistant text, usage and cost summed over the
``step-finish`` parts (one per model call, each also emitted as a ``UsagePayload``).
"""

from __future__ import annotations

import json
import secrets
import string
import time
from typing import Any

from codeyard.adapters.cli.types import Parsed
from codeyard.adapters.opencode._parts import PartMapper, as_dict
from codeyard.domain.agent import AgentResult, ResultStatus
from codeyard.domain.events import (
    ErrorPayload,
    EventPayload,
    LifecyclePayload,
    RawPayload,
    ResultPayload,
)

PROVIDER = "opencode"

#: Events of a session that carry nothing a consumer of the run needs (session metadata,
#: diffs, todo lists...): dropped without a ``RawPayload``.
_QUIET = frozenset(
    {
        "session.created",
        "session.updated",
        "session.diff",
        "session.compacted",
        "message.removed",
        "message.part.removed",
        "todo.updated",
        "file.edited",
    }
)
ABORTED = "MessageAbortedError"

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


class _IdClock:
    """The millisecond and the counter within it of the last id made in this process."""

    ms = 0
    counter = 0


def new_message_id() -> str:
    """A message id in OpenCode's own ascending format, for the prompt we send.

    OpenCode orders a session's messages by id: ``msg_`` + 12 hex digits of
    ``(unix_ms * 4096 + counter) mod 2**48`` + 14 random base-62 characters (read off
    the ids it generates: ``msg_202ec4a2e001...`` was created at 1795345369646 ms, counter
    1). Ours sort after every message created before it, like one of its own.
    """
    now_ms = time.time_ns() // 1_000_000
    if now_ms == _IdClock.ms:
        _IdClock.counter += 1
    else:
        _IdClock.ms, _IdClock.counter = now_ms, 1
    stamp = (now_ms * 4096 + _IdClock.counter) % 2**48
    tail = "".join(secrets.choice(_BASE62) for _ in range(14))
    return f"msg_{stamp:012x}{tail}"


class EventMapper:
    """Maps the ``data`` of each SSE event of session ``session_id`` for the turn started
    by the prompt whose user message id is ``prompt_id``.

    Knowing the prompt's id (the agent chooses it, see :func:`new_message_id`) is what
    tells this turn's events from leftovers of an earlier one (OpenCode re-sends old user
    messages with their diff summary and, after an abort, late updates and a second idle):
    only the prompt's user message, the assistant messages answering it (``parentID``)
    and their parts count, and an idle counts once the prompt was seen (:attr:`armed`).
    """

    def __init__(self, session_id: str, prompt_id: str) -> None:
        self.session_id = session_id
        self.prompt_id = prompt_id
        self._parts = PartMapper()
        self._answers: set[str] = set()
        self._seen_events: set[str] = set()
        self._errors: set[tuple[str, str]] = set()
        self._status: str | None = None
        self._error: tuple[str, str] | None = None
        self._aborted = False
        #: Events of this session so far (the idle watchdog's clock) and the newest event
        #: id (sent as ``Last-Event-ID`` when the stream is reopened).
        self.activity = 0
        self.last_event_id: str | None = None
        #: The prompt's user message was seen: the turn has started.
        self.armed = False
        self.result: AgentResult | None = None
        #: ``(kind, id)`` of permission/question requests the agent must answer (reject):
        #: nobody is there to answer them and the turn would wait forever.
        self.asks: list[tuple[str, str]] = []

    def feed(self, data: str) -> list[Parsed]:
        """Normalize one event's data (the JSON after ``data:``)."""
        try:
            event = json.loads(data)
        except (ValueError, RecursionError):  # deep nesting makes json.loads recurse out
            return [Parsed(RawPayload(reason="malformed"), raw=data)]
        try:
            return [Parsed(p, raw=data) for p in self._event(event)]
        except Exception as exc:  # never raise: a surprise shape is reported, not fatal
            error = ErrorPayload(message=f"cannot map event: {exc!r}", code="parser_error")
            return [Parsed(error, raw=data)]

    def feed_event(self, event: dict[str, Any]) -> list[Parsed]:
        """Like :meth:`feed` for an event built by the agent (reconciliation)."""
        return self.feed(json.dumps(event, ensure_ascii=False))

    # --- dispatch --------------------------------------------------------------------------

    def _event(self, event: Any) -> list[EventPayload]:
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return [RawPayload(reason="malformed")]
        props = as_dict(event.get("properties"))
        if props.get("sessionID") != self.session_id or self.result is not None:
            return []
        self.activity += 1
        event_id = event.get("id")
        if isinstance(event_id, str):
            if event_id in self._seen_events:
                return []  # replayed after a reconnect
            self._seen_events.add(event_id)
            self.last_event_id = event_id
        kind: str = event["type"]
        if kind == "message.updated":
            return self._message(as_dict(props.get("info")))
        if kind == "message.part.updated":
            part = as_dict(props.get("part"))
            return self._parts.updated(part, user=self._owner(part.get("messageID")))
        if kind == "message.part.delta":
            return self._parts.delta(props) if self._owner(props.get("messageID")) is False else []
        if not self.armed:
            return []  # nothing of this turn yet: a leftover of an earlier one
        if kind == "session.status":
            return self._session_status(as_dict(props.get("status")))
        if kind == "session.error":
            return self._error_payload(as_dict(props.get("error")))
        if kind == "session.idle":
            return self._idle()
        if kind in ("permission.asked", "question.asked"):
            return self._ask(kind.split(".", maxsplit=1)[0], props)
        if kind in _QUIET:
            return []
        return [RawPayload(reason="unrecognized")]

    def _owner(self, message_id: Any) -> bool | None:
        """True: the prompt's message; False: an answer to it; None: not this turn's."""
        if message_id == self.prompt_id:
            return True
        return False if message_id in self._answers else None

    def _message(self, info: dict[str, Any]) -> list[EventPayload]:
        message_id, role = info.get("id"), info.get("role")
        if not isinstance(message_id, str) or role not in ("user", "assistant"):
            return [RawPayload(reason="malformed")]
        if role == "user":
            self.armed = self.armed or message_id == self.prompt_id
            return []
        if info.get("parentID") != self.prompt_id:
            return []
        self._answers.add(message_id)
        self._parts.assistant_message(info)
        return self._error_payload(as_dict(info.get("error")))

    def _session_status(self, status: dict[str, Any]) -> list[EventPayload]:
        state = status.get("type")
        if state == "idle":
            return self._idle()
        if not isinstance(state, str):
            return [RawPayload(reason="malformed")]
        if state == "retry":
            detail = {k: status[k] for k in ("attempt", "message", "next") if k in status}
            self._status = state
            return [LifecyclePayload(state="retry", detail=detail)]
        if state == self._status:
            return []  # "busy" is repeated before every step
        self._status = state
        return [LifecyclePayload(state=state.lower())]

    def _error_payload(self, error: dict[str, Any]) -> list[EventPayload]:
        if not error:
            return []
        name = str(error.get("name") or "UnknownError")
        data = as_dict(error.get("data"))
        message = str(data.get("message") or name)
        if name == ABORTED:
            self._aborted = True
        else:
            self._error = (name, message)
        if (name, message) in self._errors:
            return []  # the same error arrives as session.error and in the message info
        self._errors.add((name, message))
        status = data.get("statusCode")
        if isinstance(status, int) and str(status) not in message:
            message = f"{message} (HTTP {status})"
        return [ErrorPayload(message=message, code=name, retryable=data.get("isRetryable") is True)]

    def _ask(self, kind: str, props: dict[str, Any]) -> list[EventPayload]:
        ask_id = props.get("id")
        if isinstance(ask_id, str):
            self.asks.append((kind, ask_id))
        what = props.get("permission") or "a question"
        message = f"opencode asked for {kind} ({what}); rejected: runs are non-interactive"
        return [ErrorPayload(message=message, code=f"{kind}_rejected")]

    def _idle(self) -> list[EventPayload]:
        self.result = self._final()
        return [ResultPayload(result=self.result)]

    def _final(self) -> AgentResult:
        turn = self._parts.summary()
        status, error, reason = ResultStatus.SUCCESS, None, turn.finish
        if self._aborted:
            status, error, reason = ResultStatus.CANCELLED, "the session was aborted", "aborted"
        elif self._error is not None:
            status, error, reason = ResultStatus.ERROR, self._error[1], self._error[0]
        return AgentResult(
            status=status,
            provider=PROVIDER,
            session_id=self.session_id,
            text=turn.text,
            cost_usd=turn.cost_usd,
            usage=turn.usage,
            turns=turn.steps,
            error=error,
            terminal_reason=reason,
        )


def replay_messages(
    mapper: EventMapper, messages: list[dict[str, Any]]
) -> tuple[list[Parsed], bool]:
    """Feed a session's message list (``GET /session/{id}/message``) to ``mapper`` as the
    events that announced it, after the event stream dropped: parts already emitted are
    not emitted again. Also tells whether an answer to the prompt is complete (finished or
    failed), which with a session no longer busy means the turn is over."""
    out: list[Parsed] = []
    complete = False
    prompt = mapper.prompt_id
    for message in messages:
        info = as_dict(message.get("info"))
        if prompt not in (info.get("id"), info.get("parentID")):
            continue
        if info.get("parentID") == prompt:
            complete = complete or "error" in info or "completed" in as_dict(info.get("time"))
        out += mapper.feed_event(synthetic_event("message.updated", mapper.session_id, info=info))
        for part in message.get("parts") or []:
            out += mapper.feed_event(
                synthetic_event("message.part.updated", mapper.session_id, part=part)
            )
    return out, complete


def synthetic_event(kind: str, session_id: str, **props: Any) -> dict[str, Any]:
    return {"type": kind, "properties": {"sessionID": session_id, **props}}
