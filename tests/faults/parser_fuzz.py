"""Byte-level fuzzing of every provider parser, shared by tests/faults and bench/soak_fuzz.py.

Each :class:`Target` takes raw stdout bytes the way the run loop does: cut into lines by
:class:`~codeyard.adapters.cli.lines.LineSplitter` (UTF-8 with ``errors="replace"``, a
trailing ``\\r`` dropped, over-long lines flagged ``truncated`` and never given to the
parser), blank lines skipped. OpenCode's server adapter reads SSE instead: bytes go through
:class:`~codeyard.adapters.opencode.sse.SseDecoder` and each complete event's data to
:class:`~codeyard.adapters.opencode.events.EventMapper`.

The inputs are :func:`blobs` (any bytes, alone or after a real line) and :func:`mutants`
(real recorded lines with bytes flipped, cut, spliced, numbers made huge, values nested
deeply or replaced by a value of another type). :func:`check` holds the property: nothing
but a list of :class:`Parsed` comes out (each parser documents that bad input becomes a
``RawPayload``/``ErrorPayload``, never an exception), each payload serializes to JSON, the
event made of it round-trips (what a client reads is what the worker published), and no
single feed takes long (no hang on pathological input).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from pydantic import TypeAdapter

from codeyard.adapters.claude.parser import ClaudeStreamParser
from codeyard.adapters.cli.lines import split_lines
from codeyard.adapters.cli.types import LineParser, Parsed
from codeyard.adapters.codex.parser import CodexParser
from codeyard.adapters.droid.parser import DroidStreamParser
from codeyard.adapters.gemini.parser import GeminiParser
from codeyard.adapters.opencode.events import EventMapper
from codeyard.adapters.opencode.run_parser import OpencodeRunParser
from codeyard.adapters.opencode.sse import SseDecoder
from codeyard.domain.events import AgentEvent, EventPayload, EventSequencer

TRANSCRIPTS = Path(__file__).resolve().parent.parent / "fixtures" / "transcripts"
#: A small line cap, so that the truncated-line path is taken too (the run loop's is 8 MiB).
MAX_LINE_BYTES = 64 * 1024
#: One feed slower than this counts as a hang (generous: the machine is shared).
MAX_FEED_S = 2.0

_PAYLOADS: TypeAdapter[EventPayload] = TypeAdapter(EventPayload)


@dataclass(frozen=True)
class Target:
    """One parser: how to make a fresh one, and how it reads a whole byte stream."""

    name: str
    make: Callable[[], Callable[[str], list[Parsed]]]
    sse: bool = False

    @property
    def samples(self) -> tuple[bytes, ...]:
        return _samples(self.name, self.sse)

    def run(self, data: bytes) -> list[Parsed]:
        feed = self.make()
        texts = _sse_data(data) if self.sse else _lines(data)
        out: list[Parsed] = []
        for text in texts:
            began = time.monotonic()
            got = feed(text)
            spent = time.monotonic() - began
            assert spent < MAX_FEED_S, f"{self.name}: one feed took {spent:.1f} s"
            assert isinstance(got, list), f"{self.name}: feed returned {type(got)}"
            out.extend(got)
        return out


def _line_parser(make: Callable[[], LineParser]) -> Callable[[], Callable[[str], list[Parsed]]]:
    return lambda: make().feed


def _lines(data: bytes) -> list[str]:
    return [
        line
        for line in split_lines([data], max_line_bytes=MAX_LINE_BYTES)
        if line.strip() and not line.truncated
    ]


def _sse_data(data: bytes) -> list[str]:
    decoder = SseDecoder(MAX_LINE_BYTES)
    events = [*decoder.feed(data), *decoder.close()]
    return [event.data for event in events if not event.truncated]


# The session and prompt of serve-tool-resume.sse, so that mutants of its events reach the
# mapper's real paths instead of being ignored as another session's.
_OC_SESSION = "ses_dfd098924ffe89ezEQ5yA3X6VS"
_OC_PROMPT = "msg_202f676e70010P8S0vO5jjaPJW"

TARGETS: tuple[Target, ...] = (
    Target("claude", _line_parser(ClaudeStreamParser)),
    Target("codex", _line_parser(lambda: CodexParser(model="m", cwd="/w"))),
    Target("droid", _line_parser(DroidStreamParser)),
    Target("gemini", _line_parser(lambda: GeminiParser(model="m", cwd="/w"))),
    Target("opencode", _line_parser(lambda: OpencodeRunParser(model="m", cwd="/w"))),
    Target("opencode-serve", lambda: EventMapper(_OC_SESSION, _OC_PROMPT).feed, sse=True),
)


@cache
def _samples(name: str, sse: bool) -> tuple[bytes, ...]:
    """The recorded lines (SSE: whole ``data:`` events) of a provider's transcripts."""
    if sse:
        paths = sorted((TRANSCRIPTS / "opencode").glob("*.sse"))
        blocks = (b for p in paths for b in p.read_bytes().split(b"\n\n"))
        return tuple(b + b"\n\n" for b in blocks if b.strip())
    folder = TRANSCRIPTS / ("opencode/run" if name == "opencode" else name)
    lines = (line for p in sorted(folder.glob("*.jsonl")) for line in p.read_bytes().splitlines())
    return tuple(line for line in lines if line.strip())


def strict_dump(payload: EventPayload) -> bytes:
    """``payload`` as JSON, the way events are published (pydantic's serializer)."""
    return _PAYLOADS.dump_json(payload)


def round_trip(parsed: Parsed) -> AgentEvent:
    """The event the run loop would publish for ``parsed``, written as JSON and read back
    the way a client does; it must come back equal."""
    event = EventSequencer(provider="fuzz").stamp(parsed.payload, raw=parsed.raw)
    back = AgentEvent.model_validate_json(event.model_dump_json())
    assert back.model_dump(mode="json") == event.model_dump(mode="json")
    return back


def check(target: Target, data: bytes) -> list[Parsed]:
    """The property (see the module docstring); returns what was parsed."""
    parsed = target.run(data)
    for item in parsed:
        assert isinstance(item, Parsed), item
        assert item.raw is None or isinstance(item.raw, str)
        assert isinstance(strict_dump(item.payload), bytes)
        round_trip(item)
    return parsed


# --- inputs ----------------------------------------------------------------------------------


def blobs(target: Target) -> st.SearchStrategy[bytes]:
    """Any bytes, alone or after a recorded line (so that a parser with state has some)."""
    junk = st.binary(max_size=2048)
    after_real = st.tuples(st.sampled_from(target.samples), junk).map(lambda p: p[0] + b"\n" + p[1])
    return junk | after_real


_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_HUGE = (b"1" * 5000, b"1e999", b"-1e400", b"9" * 40, b"1e-400", b"-0", b"NaN", b"Infinity")
_OTHER_TYPES: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    2**64,
    1.5,
    "",
    "x" * 300,
    [],
    {},
    [1],
    {"a": 1},
)


def _flip(rng: random.Random, line: bytes, _: bytes) -> bytes:
    data = bytearray(line)
    for _i in range(rng.randint(1, 8)):
        if data:
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
    return bytes(data)


def _cut(rng: random.Random, line: bytes, _: bytes) -> bytes:
    return line[: rng.randrange(len(line) + 1)]


def _splice(rng: random.Random, line: bytes, other: bytes) -> bytes:
    return line[: rng.randrange(len(line) + 1)] + other[rng.randrange(len(other) + 1) :]


def _insert_junk(rng: random.Random, line: bytes, _: bytes) -> bytes:
    at = rng.randrange(len(line) + 1)
    junk = rng.choice([b"\r", b"\n", b"\x00", b"\xff\xfe", b"\xed\xa0\x80", b"\\ud800", b'"'])
    return line[:at] + junk + line[at:]


def _huge_numbers(rng: random.Random, line: bytes, _: bytes) -> bytes:
    return _NUMBER.sub(lambda m: rng.choice(_HUGE) if rng.random() < 0.5 else m.group(), line)


def _edit_json(line: bytes, edit: Callable[[Any], Any]) -> bytes:
    """``line`` (an SSE event keeps its ``data: `` prefix) with its JSON value edited."""
    prefix, body = (b"data: ", line[6:].strip()) if line.startswith(b"data: ") else (b"", line)
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        return line
    text = json.dumps(edit(doc))
    return prefix + text.encode() + (b"\n\n" if prefix else b"")


def _slots(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside ``doc``."""
    found: list[tuple[Any, ...]] = []
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for key, value in items:
        found.append((*path, key))
        found.extend(_slots(value, (*path, key)))
    return found


def _replace_at(rng: random.Random, doc: Any, make: Callable[[Any], Any]) -> Any:
    slots = _slots(doc)
    if not slots:
        return make(doc)
    *parents, last = rng.choice(slots)
    holder = doc
    for key in parents:
        holder = holder[key]
    holder[last] = make(holder[last])
    return doc


def _wrong_type(rng: random.Random, line: bytes, _: bytes) -> bytes:
    def other(value: Any) -> Any:
        choices = [v for v in _OTHER_TYPES if type(v) is not type(value)]
        return rng.choice(choices)

    return _edit_json(line, lambda doc: _replace_at(rng, doc, other))


def _deep(rng: random.Random, line: bytes, _: bytes) -> bytes:
    depth = rng.choice([30, 150, 300, 990, 3000, 20_000])
    if rng.random() < 0.2:  # not even complete JSON: only the nesting matters
        return b"[" * depth
    opener, closer = (b"[", b"]") if rng.random() < 0.5 else (b'{"a":', b"}")
    # json.dumps would recurse as deep as the value: splice the text in by hand.
    marker = "__codeyard_deep__"
    text = _edit_json(line, lambda doc: _replace_at(rng, doc, lambda _v: marker))
    return text.replace(json.dumps(marker).encode(), opener * depth + b"1" + closer * depth)


MUTATIONS: tuple[Callable[[random.Random, bytes, bytes], bytes], ...] = (
    _flip,
    _cut,
    _splice,
    _insert_junk,
    _huge_numbers,
    _wrong_type,
    _deep,
)


@st.composite
def mutants(draw: st.DrawFn, target: Target) -> bytes:
    """Some recorded lines in order, one to three of them mutated (see MUTATIONS)."""
    samples = target.samples
    start = draw(st.integers(0, len(samples) - 1))
    window = list(samples[start : start + draw(st.integers(1, 6))])
    rng = random.Random(draw(st.integers(0, 2**32)))
    for _i in range(draw(st.integers(1, 3))):
        at = rng.randrange(len(window))
        mutate = draw(st.sampled_from(MUTATIONS))
        window[at] = mutate(rng, window[at], rng.choice(samples))
    separator = b"" if target.sse else b"\n"
    return separator.join(window) + separator
