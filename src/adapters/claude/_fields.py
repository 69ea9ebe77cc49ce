"""Defensive readers of Claude Code's JSON fields and the ``result`` line mapping.

Every reader tolerates a missing or wrongly typed field (the stream format drifts between
CLI versions); only :func:`required_str` raises, for the ids without which a payload would
be meaningless, and the parser turns that into a raw event.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from codeyard.domain.agent import AgentResult, ResultStatus, TokenUsage
from codeyard.domain.trusted import trusted

PROVIDER = "claude"

JsonObject = dict[str, Any]

#: HTTP statuses of the model API worth retrying later (timeouts, rate limits, overload).
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
#: Claude's own error categories (assistant ``error`` / ``api_retry.error``) that recover.
_RETRYABLE_ERRORS = frozenset({"rate_limit", "overloaded", "server_error", "overloaded_error"})

# Unvalidated builders (codeyard.domain.trusted): every value below comes from the
# readers of this module, which return the field's type and range only (count: int >= 0,
# non_negative: finite float >= 0 or None, as_str: str or None), or from constants.
_token_usage = trusted(TokenUsage)
_agent_result = trusted(AgentResult)


def as_dict(value: object) -> JsonObject:
    return value if isinstance(value, dict) else {}


def as_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def required_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        msg = f"{key!r} must be a non-empty string"
        raise TypeError(msg)
    return value


def count(value: object) -> int:
    """A token/turn count: non-negative int; anything else (bool, float, junk) is 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def non_negative(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def status_code(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def retryable(status: int | None, category: str | None) -> bool:
    return status in RETRYABLE_STATUSES or (status or 0) >= 500 or category in _RETRYABLE_ERRORS


def usage_from(data: Mapping[str, Any]) -> TokenUsage:
    """Anthropic's usage object; cache writes are ``cache_creation_input_tokens``."""
    return _token_usage(
        input_tokens=count(data.get("input_tokens")),
        output_tokens=count(data.get("output_tokens")),
        cache_read_tokens=count(data.get("cache_read_input_tokens")),
        cache_write_tokens=count(data.get("cache_creation_input_tokens")),
    )


def tool_output(content: object) -> str:
    """A tool_result's content as text: a string, or the text of its blocks."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
            elif isinstance(block, dict):
                # Images and other binary blocks: say what was there, never inline the data.
                parts.append(f"[{block.get('type', 'block')}]")
        return "\n".join(parts)
    return json.dumps(content, ensure_ascii=False)


def result_from(obj: JsonObject, *, session_id: str | None, last_text: str) -> AgentResult:
    """The ``result`` line as an :class:`AgentResult`.

    ``is_error: true`` is an error even under ``subtype: "success"`` (API errors arrive that
    way); ``terminal_reason`` ``aborted_*`` is what Claude's SIGINT handling writes, so it
    maps to ``cancelled``. ``last_text`` (the last top-level assistant text) stands in for
    the answer when the run failed or the line has none.
    """
    subtype = as_str(obj.get("subtype")) or "unknown"
    terminal_reason = as_str(obj.get("terminal_reason"))
    failed = obj.get("is_error") is True or subtype != "success"
    if not failed:
        status = ResultStatus.SUCCESS
    elif (terminal_reason or "").startswith("aborted"):
        status = ResultStatus.CANCELLED
    else:
        status = ResultStatus.ERROR
    answer = as_str(obj.get("result"))
    duration_ms = non_negative(obj.get("duration_ms"))
    return _agent_result(
        status=status,
        provider=PROVIDER,
        session_id=session_id,
        text=answer if answer is not None and not failed else last_text,
        cost_usd=non_negative(obj.get("total_cost_usd")),
        usage=usage_from(as_dict(obj.get("usage"))),
        turns=count(obj.get("num_turns")),
        duration_s=duration_ms / 1000 if duration_ms is not None else 0.0,
        error=_result_error(obj, subtype, terminal_reason) if failed else None,
        terminal_reason=terminal_reason or subtype,
    )


def _result_error(obj: JsonObject, subtype: str, terminal_reason: str | None) -> str:
    parts: list[str] = []
    answer = as_str(obj.get("result"))
    if answer:
        parts.append(answer)
    errors = obj.get("errors")
    if isinstance(errors, list):
        parts.extend(e for e in errors if isinstance(e, str) and e)
    return "; ".join(parts) or f"claude ended with {subtype} ({terminal_reason or 'no reason'})"
