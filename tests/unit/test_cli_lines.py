"""codeyard.adapters.cli.lines: bytes chunks -> lines, whatever the chunking."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeyard.adapters.cli.lines import DEFAULT_MAX_LINE_BYTES, LineSplitter, split_lines


def reference_lines(data: bytes, max_line_bytes: int) -> list[tuple[str, bool]]:
    """What the splitter must produce, computed on the whole stream at once."""
    pieces = data.split(b"\n")
    if pieces and pieces[-1] == b"":
        pieces.pop()  # a final newline ends the last line, it does not start one
    out: list[tuple[str, bool]] = []
    for piece in pieces:
        if len(piece) > max_line_bytes:
            out.append((piece[:max_line_bytes].decode("utf-8", errors="replace"), True))
        elif piece:
            out.append((piece.decode("utf-8", errors="replace").removesuffix("\r"), False))
        else:
            out.append(("", False))
    return out


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# Streams rich in what matters: newlines, CRs, multi-byte characters and invalid bytes.
alphabet = st.sampled_from(
    [b"a", b"{", b"\n", b"\r", b"\r\n", "é".encode(), "€".encode(), "😀".encode(), b"\xff", b"\xc3"]
)
streams = st.lists(alphabet, max_size=200).map(b"".join) | st.binary(max_size=300)


@settings(max_examples=400)
@given(data=streams, cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_yields_the_same_lines(data: bytes, cuts: list[int]) -> None:
    whole = split_lines([data])
    pieces = split_lines(chunked(data, cuts))
    bytewise = split_lines([data[i : i + 1] for i in range(len(data))])
    assert pieces == whole == bytewise
    assert [line.truncated for line in pieces] == [line.truncated for line in whole]


@settings(max_examples=300)
@given(
    data=streams,
    cuts=st.lists(st.integers(min_value=0), max_size=20),
    cap=st.integers(min_value=1, max_value=12),
)
def test_lines_match_the_reference_including_the_cap(
    data: bytes, cuts: list[int], cap: int
) -> None:
    lines = split_lines(chunked(data, cuts), max_line_bytes=cap)
    expected = reference_lines(data, cap)
    assert [line.truncated for line in lines] == [truncated for _, truncated in expected]
    for line, (text, truncated) in zip(lines, expected, strict=True):
        assert "\n" not in line
        if truncated:
            # A cut inside a character holds the incomplete tail back instead of
            # turning it into U+FFFD.
            assert line in (text, text.removesuffix("\ufffd"))
        else:
            assert line == text


@given(st.binary(max_size=200))
def test_decoding_never_raises_and_replaces_invalid_bytes(data: bytes) -> None:
    lines = split_lines([data])
    assert "".join(lines) == "".join(
        part.decode("utf-8", errors="replace").removesuffix("\r") for part in data.split(b"\n")
    )


def test_a_character_split_across_chunks_is_decoded_whole() -> None:
    euro = "€".encode()
    assert split_lines([b"price: " + euro[:1], euro[1:2], euro[2:] + b"\n"]) == ["price: €"]


def test_crlf_and_missing_final_newline() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b'{"a":1}\r\n{"b"') == ['{"a":1}']
    assert splitter.feed(b":2}") == []
    assert splitter.close() == ['{"b":2}']
    assert splitter.close() == []
    with pytest.raises(RuntimeError):
        splitter.feed(b"late")


def test_an_over_long_line_is_emitted_truncated_at_once_and_its_rest_dropped() -> None:
    splitter = LineSplitter(max_line_bytes=10)
    first = splitter.feed(b"0123456789ABC")
    # Emitted as soon as the cap is exceeded, not when (if ever) the newline comes.
    assert first == ["0123456789"]
    assert first[0].truncated
    assert splitter.feed(b"DEF" * 1000) == []
    assert splitter.feed(b"GHI\nnext\n") == ["next"]
    assert not splitter.feed(b"x\n")[0].truncated


def test_a_line_of_exactly_the_cap_is_not_truncated() -> None:
    lines = split_lines([b"x" * 10 + b"\n"], max_line_bytes=10)
    assert lines == ["x" * 10]
    assert not lines[0].truncated


def test_a_cut_never_ends_inside_a_character() -> None:
    (line,) = split_lines(["ab€€".encode() + b"\n"], max_line_bytes=4)  # cap inside the euro
    assert line == "ab"
    assert line.truncated


def test_the_default_cap_is_8_mib_and_memory_stays_bounded() -> None:
    assert DEFAULT_MAX_LINE_BYTES == 8 * 1024 * 1024
    splitter = LineSplitter(max_line_bytes=1024)
    out = []
    for _ in range(1000):  # 1 MiB without a newline
        out += splitter.feed(b"y" * 1024)
    assert len(out) == 1
    assert len(splitter._buf) == 0  # the rest of the line is dropped, not buffered


def test_the_cap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_line_bytes"):
        LineSplitter(max_line_bytes=0)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (r'{"t":"a\ud800"}', r'{"t":"a\ufffd"}'),  # a lone high surrogate
        (r'{"t":"\uDC00x"}', r'{"t":"\ufffdx"}'),  # a lone low one, upper case
        (r'{"t":"\ud83d\ude00"}', r'{"t":"\ud83d\ude00"}'),  # a pair (an emoji): kept
        (r'{"t":"\ud800\ud83d\ude00"}', r'{"t":"\ufffd\ud83d\ude00"}'),
        (r'{"t":"\\ud800"}', r'{"t":"\\ud800"}'),  # an escaped backslash, then text
        (r'{"t":"\\\ud800"}', r'{"t":"\\\ufffd"}'),  # an escaped backslash, then the escape
        (r'{"t":"\ud83d\\ude00"}', r'{"t":"\ufffd\\ude00"}'),
        (r'{"t":"\u00e9\u2028"}', r'{"t":"\u00e9\u2028"}'),  # other escapes: untouched
    ],
)
def test_lone_surrogate_escapes_become_replacement_characters(line: str, expected: str) -> None:
    """Issue #9: json.loads would make a str holding a lone surrogate, which no event can
    be serialized with; every provider's lines pass here, SSE included."""
    (got,) = split_lines([line.encode() + b"\n"])
    assert got == expected
    json.loads(got)["t"].encode("utf-8")  # encodable: no lone surrogate left
    (cut,) = split_lines([line.encode()], max_line_bytes=len(line))
    assert cut == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "\\", "\\\\", "\ud83d", "\ude00", "\ud800", "é"])))
def test_no_line_decodes_to_a_lone_surrogate(parts: list[str]) -> None:
    text = "".join(parts)
    # ensure_ascii escapes every non-ASCII character, surrogates and pairs alike.
    line = json.dumps({"t": text}, ensure_ascii=True)
    (got,) = split_lines([line.encode()])
    decoded = json.loads(got)["t"]
    decoded.encode("utf-8")
    if "\ud800" not in text and "\ud83d" not in text and "\ude00" not in text:
        assert got == line  # nothing to replace: the line is unchanged
