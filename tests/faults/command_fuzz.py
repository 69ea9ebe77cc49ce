"""Hypothesis-made command entries thrown at ``worker:commands`` of a serving manager, and
the check that each got its answer. Shared by tests/faults/test_command_fuzz.py and
bench/soak_fuzz.py.

The entries are the contract suite's :data:`~tests.contract.test_command_service.garbage`
(text and binary junk, JSON that is not a command, entries without the command field,
valid commands with no ``request_id``, valid documents mutated into invalid ones) plus
:data:`structured`: well-formed JSON commands with a ``request_id`` (so a reply stream can
be derived) whose fields are wrong, huge, binary junk or lone surrogates, for workers that
do not exist. What must happen:

* an entry carrying a command document with a ``request_id`` gets exactly one reply, a
  typed error (``ok`` false, an error ``code``) — or success for a valid create;
* any other entry (no reply stream can be derived) is dead-lettered, by its entry id.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from hypothesis import strategies as st

from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.domain.commands import COMMAND_FIELD, Reply
from codeyard.domain.streams import COMMANDS_STREAM, DEAD_LETTER_STREAM, response_stream
from tests.contract.test_command_service import Garbage, garbage

_junk_text = st.one_of(
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
    st.text(st.characters(codec="utf-8", exclude_categories=()), max_size=20),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u202e", "💥" * 10, " ", ""]),
)
_huge_text = st.sampled_from([1_000, 65_536, 300_000]).map(lambda n: "x" * n)
_wrong = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    _junk_text,
    _huge_text,
)
_worker_ids = st.one_of(st.just("w-nobody"), _junk_text, _huge_text, _wrong)
_types = st.sampled_from(["list", "status", "delete", "logs", "send"])
_not_a_string = st.one_of(st.booleans(), st.integers(), st.lists(st.integers(), min_size=1))
_not_a_spec = st.one_of(
    st.booleans(), st.integers(), st.lists(st.integers(), min_size=1), _junk_text
)

#: Answerable documents (``request_id`` is added when published) that are not valid
#: commands or name workers that do not exist: each must get a typed error reply (or a
#: success: a ``list`` with extra fields may be valid). Never a valid create: those are
#: mixed in on purpose (:func:`publish_create`), each one starts a worker process.
structured: st.SearchStrategy[Garbage] = st.one_of(
    st.fixed_dictionaries({"type": _types | _junk_text | _wrong, "worker_id": _worker_ids}),
    st.fixed_dictionaries(
        {"type": st.just("send"), "worker_id": _worker_ids, "prompt": _junk_text | _huge_text}
    ),
    st.fixed_dictionaries(
        {"type": st.just("logs"), "worker_id": st.just("w-nobody"), "tail": _wrong}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("create"),
            # Any string may name a provider (custom ones): the agent is never one.
            "spec": _not_a_spec | st.fixed_dictionaries({"agent": _not_a_string}),
        }
    ),
    st.fixed_dictionaries({"type": _types, "reply_to": _junk_text | _wrong}),
    st.dictionaries(st.text(max_size=6), _wrong, max_size=4).map(lambda d: {"type": "status", **d}),
).map(lambda doc: Garbage(doc={k: v for k, v in doc.items() if k != "request_id"}))

#: What ``reply_to`` must look like (codeyard.domain.commands).
_STREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:{}-]{0,255}")

#: One entry of a batch.
entries: st.SearchStrategy[Garbage] = st.one_of(garbage, structured)


@dataclass
class Sent:
    """What one batch published, for :func:`check_answers`."""

    answerable: list[str] = field(default_factory=list)
    #: Request ids of valid creates (their reply must be a success).
    creates: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    #: A document's ``reply_to`` when it is a valid stream name (the manager answers there).
    reply_to: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def count(self) -> int:
        return len(self.answerable) + len(self.dead)


async def publish(bus: RedisEventBus, batch: Sequence[Garbage], sent: Sent | None = None) -> Sent:
    """Publish ``batch`` to ``worker:commands``, a fresh ``request_id`` on each document."""
    sent = sent or Sent()
    for item in batch:
        if item.doc is not None:
            request_id = uuid.uuid4().hex
            sent.answerable.append(request_id)
            reply_to = item.doc.get("reply_to")
            if isinstance(reply_to, str) and _STREAM_NAME.fullmatch(reply_to):
                sent.reply_to[request_id] = reply_to
            doc = json.dumps(item.doc | {"request_id": request_id})
            await bus.publish(COMMANDS_STREAM, {COMMAND_FIELD: doc})
        else:
            assert item.fields is not None
            sent.dead.append(await bus.publish(COMMANDS_STREAM, item.fields))
    return sent


async def publish_create(bus: RedisEventBus, sent: Sent) -> str:
    """A valid create (no prompt) among the junk; returns its request id."""
    request_id = uuid.uuid4().hex
    doc: dict[str, Any] = {"type": "create", "request_id": request_id, "spec": {}}
    await bus.publish(COMMANDS_STREAM, {COMMAND_FIELD: json.dumps(doc)})
    sent.creates.append(request_id)
    return request_id


async def replies(bus: RedisEventBus, request_id: str, reply_to: str | None = None) -> list[Reply]:
    """The replies to ``request_id``: on its own response stream, and on ``reply_to`` when
    the command named one (a valid ``reply_to`` is where the manager answers)."""
    found = [
        Reply.from_fields(e.fields) for e in await bus.read(response_stream(request_id), count=10)
    ]
    if reply_to:
        found += [
            reply
            for e in await bus.read(reply_to, count=10_000)
            if (reply := Reply.from_fields(e.fields)).request_id == request_id
        ]
    return found


async def _all_answered(bus: RedisEventBus, sent: Sent) -> bool:
    for request_id in [*sent.answerable, *sent.creates]:
        if not await replies(bus, request_id, sent.reply_to.get(request_id)):
            return False
    return set(sent.dead) <= await dead_letters(bus)


async def _missing(bus: RedisEventBus, sent: Sent) -> list[str]:
    unanswered = [
        f"request {r}"
        for r in [*sent.answerable, *sent.creates]
        if not await replies(bus, r, sent.reply_to.get(r))
    ]
    return unanswered + [f"entry {e}" for e in set(sent.dead) - await dead_letters(bus)]


async def dead_letters(bus: RedisEventBus) -> set[str]:
    return {e.fields["id"] for e in await bus.read(DEAD_LETTER_STREAM, count=1_000_000)}


async def wait_for(check: Callable[[], Awaitable[bool]], deadline_s: float) -> None:
    """Poll state another task or process owns until ``check`` holds."""
    with anyio.fail_after(deadline_s):
        while not await check():  # noqa: ASYNC110 - the manager writes to Redis, no event here
            await anyio.sleep(0.05)


async def check_answers(bus: RedisEventBus, sent: Sent, deadline_s: float = 60) -> float:
    """Wait until every entry of ``sent`` is answered, check the answers; returns the
    seconds from the first publish until all were answered."""
    try:
        await wait_for(lambda: _all_answered(bus, sent), deadline_s)
    except TimeoutError:
        raise AssertionError(
            f"unanswered after {deadline_s} s: {await _missing(bus, sent)}"
        ) from None
    elapsed = time.monotonic() - sent.started
    for request_id in sent.answerable:
        (reply,) = await replies(bus, request_id, sent.reply_to.get(request_id))
        assert reply.request_id == request_id
        assert reply.ok or reply.error_code not in ("None", "internal"), reply
    for request_id in sent.creates:
        (reply,) = await replies(bus, request_id)
        assert reply.ok, reply
    return elapsed
