"""Several scripts on one server: a :class:`Router` picks the scenario per conversation.

Agents running at the same time (three developer tasks and a reviewer, say) talk to one
model server but need different scripts. Each conversation names its script by a *marker*,
a string its prompt carries (``"[task:a]"``, ``"[review]"``)::

    ModelServer(Router({"[task:a]": scenario_a, "[review]": review}, default=fallback))

**Where the marker is looked for.** In the user text of the conversation's FIRST user
message, falling back to the later user messages in order; the first message holding any
marker decides. The CLIs do not agree on where the prompt goes: Claude Code prepends
``<system-reminder>`` blocks (CLAUDE.md, context) to the prompt inside the first message,
Codex and Gemini CLI send their environment context as user messages of their own before
it. System prompts (``system``, ``instructions``, ``systemInstruction``, ``system`` /
``developer`` roles) are never searched, nor are tool results (``tool_result`` blocks,
``function_call_output`` items, ``functionResponse`` parts): a tool's output is what the
agent read, not what it was asked, and a reviewer reading a diff must not be routed by the
markers the diff happens to contain. When one message holds several markers, the one
appearing FIRST in its text wins (the longest on a tie), so a review prompt that starts
with ``[review]`` and quotes the developer's ``[task:a]`` prompt later goes to ``[review]``
whatever the order of the mapping. No marker anywhere: ``default``.

**Routing is stateless, like turn selection.** The marker lives in the history that every
request carries, so retries, resumed sessions in new processes and concurrent
conversations all route consistently. Inside the chosen scenario the turn is still picked
by the number of model responses in the history (``turns[n]`` answers a conversation
holding ``n``), so a conversation resumed for a LATER round (a developer's second round
after review feedback, say) simply continues the same script: with turn 0 writing the
code and turn 1 summing up in round 1, ``turns[2]`` answers the feedback prompt of round 2.
Side requests (no tools declared) are routed the same way and get the routed scenario's
``side_reply``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from codeyard.testing.model_server.scenario import Scenario, Text

#: The reply when no marker matches and the router has no default.
UNROUTED = Scenario(turns=(), exhausted=(Text("(no scenario route matched)", chunk_size=0),))


class Router:
    """Chooses a :class:`Scenario` per request by the marker its conversation carries
    (see the module docstring). ``routes`` maps marker to scenario (markers non-empty);
    ``default`` answers conversations without a marker (``UNROUTED`` when omitted)."""

    def __init__(self, routes: Mapping[str, Scenario], *, default: Scenario | None = None) -> None:
        if any(not marker for marker in routes):
            msg = "a route marker must not be empty"
            raise ValueError(msg)
        self.routes: dict[str, Scenario] = dict(routes)
        self.default = default if default is not None else UNROUTED

    def marker(self, dialect: str, body: Mapping[str, Any]) -> str | None:
        """The marker naming the conversation of ``body`` (in ``dialect``), or ``None``."""
        for text in user_messages(dialect, body):
            found = _earliest(text, self.routes)
            if found is not None:
                return found
        return None

    def resolve(self, dialect: str, body: Mapping[str, Any]) -> Scenario:
        """The scenario answering ``body``."""
        return resolve(self, dialect, body)[0]


#: What a server serves: one scenario for every request, or a router.
Script = Scenario | Router


def resolve(script: Script, dialect: str, body: Mapping[str, Any]) -> tuple[Scenario, str | None]:
    """The scenario answering ``body`` and the marker that chose it (``None``: no router,
    or no marker matched)."""
    if isinstance(script, Scenario):
        return script, None
    found = script.marker(dialect, body)
    return (script.default if found is None else script.routes[found]), found


def _earliest(text: str, markers: Mapping[str, Scenario]) -> str | None:
    best: tuple[int, int] | None = None
    chosen: str | None = None
    for marker in markers:
        position = text.find(marker)
        if position < 0:
            continue
        key = (position, -len(marker))
        if best is None or key < best:
            best, chosen = key, marker
    return chosen


# --- user text per dialect ----------------------------------------------------------------


def user_messages(dialect: str, body: Mapping[str, Any]) -> list[str]:
    """The user text of each user message of ``body``, in order (text parts of one message
    joined by newlines; messages holding no user text, such as tool results, left out)."""
    extract = _EXTRACTORS.get(dialect)
    if extract is None:
        return []
    return [text for text in extract(body) if text]


def _texts(content: Any, kinds: frozenset[str]) -> str:
    """A message's content: a string, or a list of parts whose ``type`` is in ``kinds``."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = [
        part["text"]
        for part in content
        if isinstance(part, dict)
        and part.get("type") in kinds
        and isinstance(part.get("text"), str)
    ]
    return "\n".join(parts)


_TEXT = frozenset({"text"})
_INPUT_TEXT = frozenset({"input_text", "text"})


def _role_messages(body: Mapping[str, Any], key: str) -> Iterator[dict[str, Any]]:
    items = body.get(key)
    if isinstance(items, list):
        yield from (m for m in items if isinstance(m, dict) and m.get("role") == "user")


def _anthropic(body: Mapping[str, Any]) -> Iterator[str]:
    # Content blocks: text (prompt, system-reminders), tool_result, image... only text counts.
    for message in _role_messages(body, "messages"):
        yield _texts(message.get("content"), _TEXT)


def _chat(body: Mapping[str, Any]) -> Iterator[str]:
    # Tool output comes in ``role: "tool"`` messages, never in user ones.
    for message in _role_messages(body, "messages"):
        yield _texts(message.get("content"), _TEXT)


def _responses(body: Mapping[str, Any]) -> Iterator[str]:
    items = body.get("input")
    if isinstance(items, str):
        # The short form: the whole input is one user message.
        yield items
        return
    if not isinstance(items, list):
        return
    for item in items:
        if (
            isinstance(item, dict)
            and item.get("type", "message") == "message"
            and item.get("role") == "user"
        ):
            yield _texts(item.get("content"), _INPUT_TEXT)


def _gemini(body: Mapping[str, Any]) -> Iterator[str]:
    contents = body.get("contents")
    if not isinstance(contents, list):
        return
    for content in contents:
        # The API takes a missing role as the user's.
        if not isinstance(content, dict) or content.get("role", "user") != "user":
            continue
        parts = content.get("parts")
        if isinstance(parts, list):
            texts = (p.get("text") for p in parts if isinstance(p, dict))
            yield "\n".join(t for t in texts if isinstance(t, str))


_EXTRACTORS = {
    "anthropic": _anthropic,
    "chat": _chat,
    "responses": _responses,
    "gemini": _gemini,
}
