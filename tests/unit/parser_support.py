"""Shared by the CLI parser tests: the recorded transcripts (verbatim copies under
``tests/fixtures/transcripts``), feeding lines to a parser, and the pieces of the
properties every line parser must keep (any chunking gives the same events, garbage never
crashes)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from codeyard.adapters.cli.lines import split_lines
from codeyard.adapters.cli.types import LineParser, Parsed
from codeyard.domain.events import RawPayload, ResultPayload

TRANSCRIPT_ROOT = Path(__file__).resolve().parent.parent / "fixtures" / "transcripts"


def transcript_dir(*parts: str) -> Path:
    """The folder of one CLI's recorded transcripts, e.g. ``transcript_dir("codex")``."""
    return TRANSCRIPT_ROOT.joinpath(*parts)


def read_transcript(folder: Path, name: str) -> list[str]:
    return (folder / name).read_text(encoding="utf-8").splitlines()


def feed_each(parser: LineParser, lines: list[str]) -> list[Parsed]:
    """Everything ``parser`` makes of ``lines``, fed one by one."""
    return [parsed for line in lines for parsed in parser.feed(line)]


def types(parsed: list[Parsed]) -> list[str]:
    return [p.payload.type for p in parsed]


def the_result(parsed: list[Parsed]) -> ResultPayload:
    results = [p.payload for p in parsed if isinstance(p.payload, ResultPayload)]
    assert len(results) == 1
    assert parsed[-1].payload is results[0], "the result is the last thing parsed"
    return results[0]


def check_any_chunking(
    data: st.DataObject, paths: Sequence[Path], feed: Callable[[list[str]], list[Parsed]]
) -> None:
    """A transcript drawn from ``paths``, cut in arbitrary chunks and split back into
    lines, gives the same events as its lines."""
    path = data.draw(st.sampled_from(paths))
    raw = path.read_bytes()
    cuts = sorted(data.draw(st.sets(st.integers(0, len(raw)), max_size=40)))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    expected = feed(raw.decode().splitlines())
    assert feed(list(split_lines(chunks))) == expected


def any_json(*, floats: bool = True) -> st.SearchStrategy[Any]:
    """Any JSON value (``floats`` off: no floats among the scalars)."""
    scalars: st.SearchStrategy[Any] = st.none() | st.booleans() | st.integers()
    if floats:
        scalars = scalars | st.floats()
    return st.recursive(
        scalars | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
        max_leaves=10,
    )


def garbage_lines(
    fuzzy_events: st.SearchStrategy[dict[str, Any]], max_size: int = 8
) -> st.SearchStrategy[list[str]]:
    """Lists of lines: arbitrary text or a fuzzed event object, as JSON."""
    return st.lists(st.text(max_size=80) | fuzzy_events.map(json.dumps), max_size=max_size)


def is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def check_non_objects_become_raw(parser: LineParser, lines: list[str]) -> None:
    """Each of ``lines`` (newlines made spaces) that is not a JSON object comes out as raw
    events only."""
    for text in lines:
        line = text.replace("\n", " ")
        is_object = is_json_object(line)
        for parsed in parser.feed(line):
            if not is_object:
                assert isinstance(parsed.payload, RawPayload)
