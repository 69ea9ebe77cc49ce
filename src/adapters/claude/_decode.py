"""Decoding one stream-json line into the dict the parser reads, fast.

A Claude Code line is mostly bytes the parser never looks at: the init line lists MCP
servers, slash commands, agents and plugins; assistant lines carry the model, usage and
thinking signatures; the result line a per-model usage table. msgspec decoding into the
TypedDicts below builds only the keys the parser reads and skips the rest without building
Python objects for it: ~1.8 us/line on the recorded transcripts, against ~4.3 for
pydantic-core's ``from_json`` and ~8 for ``json.loads`` (bench/parser.py).

What the parser sees must not depend on which decoder ran, so:

* every key the parser (parser.py, _fields.py) reads is declared here, and leaves are
  ``Any``: their value arrives exactly as ``json.loads`` would give it and the parser's
  own defensive checks apply unchanged;
* nested objects the parser walks are declared as TypedDicts too (only their read keys);
  a value of another shape there (``message`` a string, say) fails msgspec's validation,
  and the line is decoded again in full, so the parser sees what it always saw;
* msgspec refuses what it cannot represent exactly like ``json.loads`` (NaN/Infinity,
  out-of-range floats, lone surrogates...): those lines also take the full decoder;
* ``system`` lines other than ``init``/``api_retry`` are decoded in full: their payload
  keeps every field (``LifecyclePayload.detail``).

The full decoder is pydantic-core's ``from_json`` then ``json.loads`` for what it refuses,
so what is accepted is exactly what ``json.loads`` accepts.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

import msgspec
from pydantic_core import from_json

__all__ = ["decode_full", "decode_line"]


class _Block(TypedDict, total=False):
    """An assistant or user content block (text, thinking, tool_use, tool_result)."""

    type: Any
    text: Any
    thinking: Any
    id: Any
    name: Any
    input: Any
    tool_use_id: Any
    content: Any
    is_error: Any


class _Message(TypedDict, total=False):
    id: Any
    content: str | list[_Block] | None


class _Delta(TypedDict, total=False):
    type: Any
    text: Any
    thinking: Any


class _EventMessage(TypedDict, total=False):
    id: Any


class _Event(TypedDict, total=False):
    """A ``stream_event``'s ``event``."""

    type: Any
    message: _EventMessage
    delta: _Delta
    error: Any


class _Usage(TypedDict, total=False):
    input_tokens: Any
    output_tokens: Any
    cache_read_input_tokens: Any
    cache_creation_input_tokens: Any


class _Line(TypedDict, total=False):
    """The union of the top-level keys every handler reads."""

    type: Any
    subtype: Any
    session_id: Any
    # system/init, system/api_retry
    model: Any
    cwd: Any
    tools: Any
    error_status: Any
    attempt: Any
    max_retries: Any
    # assistant / user
    message: _Message
    parent_tool_use_id: Any
    is_api_error_message: Any
    error: Any
    api_error_status: Any
    api_error_type: Any
    # stream_event
    event: _Event
    api_message_id: Any
    # rate_limit_event: its info is the payload's detail, so kept whole
    rate_limit_info: Any
    # result
    result: Any
    is_error: Any
    terminal_reason: Any
    usage: _Usage
    duration_ms: Any
    total_cost_usd: Any
    num_turns: Any
    errors: Any


_DECODER = msgspec.json.Decoder(_Line)


def decode_full(line: str) -> Any:
    """The whole JSON document: pydantic-core's parser (Rust), ``json.loads`` for what it
    refuses (lone surrogates, for one); ``ValueError`` when neither takes it."""
    try:
        return from_json(line)
    except ValueError:
        return json.loads(line)


def decode_line(line: str) -> Any:
    """The line with the keys the parser reads (see the module docstring for why that is
    indistinguishable to the parser from the full document); ``ValueError`` if not JSON."""
    # msgspec takes an exact str only, and the run loop's lines are a str subclass
    # (codeyard.adapters.cli.lines.Line): str() makes the plain copy (a memcpy).
    try:
        obj = _DECODER.decode(line if type(line) is str else str(line))
    except msgspec.DecodeError:  # includes ValidationError: another shape, or not JSON
        return decode_full(line)
    # Of the system lines, only init and api_retry read declared keys alone; the others
    # keep them all. (A tuple, not a set: a subtype can be any JSON value, lists too.)
    if obj.get("type") == "system" and obj.get("subtype") not in ("init", "api_retry"):
        return decode_full(line)
    return obj
