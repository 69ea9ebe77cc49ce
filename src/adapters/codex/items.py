"""The tool items of ``codex exec --json``: what a tool call was and how it ended.

Shapes from codex-rs ``exec/src/exec_events.rs``: ``command_execution`` (shell command,
aggregated output, exit code), ``file_change`` (patch applied: paths and kinds),
``mcp_tool_call`` (server, tool, arguments, result content or error), ``web_search``,
``collab_tool_call`` (sub-agent operations) and the ``todo_list`` plan. All functions are
lenient: a missing or mistyped field reads as empty, never as an exception.
"""

from __future__ import annotations

from typing import Any

from pydantic import JsonValue

#: Item types that are tool calls: ``item.started`` is the use, ``item.completed`` the result.
TOOL_ITEMS = frozenset(
    {"command_execution", "file_change", "mcp_tool_call", "web_search", "collab_tool_call"}
)
_FAILED_STATUSES = frozenset({"failed", "declined"})


def text_field(data: dict[str, Any], key: str, default: str = "") -> str:
    value = data.get(key)
    return value if isinstance(value, str) else default


def json_object(value: Any) -> dict[str, JsonValue]:
    return value if isinstance(value, dict) else {}


def todo_items(items: Any) -> list[JsonValue]:
    if not isinstance(items, list):
        return []
    return [
        {"text": text_field(entry, "text"), "completed": entry.get("completed") is True}
        for entry in items
        if isinstance(entry, dict)
    ]


def tool_call(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    """The ``name`` and ``input`` of a tool item's use."""
    if kind == "command_execution":
        return {"name": "shell", "input": {"command": text_field(item, "command")}}
    if kind == "file_change":
        changes = item.get("changes")
        listed = [
            {"path": text_field(c, "path"), "kind": text_field(c, "kind")}
            for c in (changes if isinstance(changes, list) else [])
            if isinstance(c, dict)
        ]
        return {"name": "file_change", "input": {"changes": listed}}
    if kind == "mcp_tool_call":
        name = f"mcp__{text_field(item, 'server')}__{text_field(item, 'tool')}"
        return {"name": name, "input": json_object(item.get("arguments"))}
    if kind == "web_search":
        return {"name": "web_search", "input": {"query": text_field(item, "query")}}
    # collab_tool_call: a sub-agent operation (spawn_agent, send_input, wait, close_agent).
    receivers = item.get("receiver_thread_ids")
    return {
        "name": f"collab__{text_field(item, 'tool')}",
        "input": {
            "prompt": text_field(item, "prompt"),
            "receiver_thread_ids": [r for r in receivers if isinstance(r, str)]
            if isinstance(receivers, list)
            else [],
        },
    }


def tool_outcome(kind: str, item: dict[str, Any]) -> tuple[str, bool]:
    """``(output, is_error)`` of a completed tool item."""
    failed = text_field(item, "status") in _FAILED_STATUSES
    if kind == "command_execution":
        exit_code = item.get("exit_code")
        nonzero = isinstance(exit_code, int) and exit_code != 0
        return text_field(item, "aggregated_output"), failed or nonzero
    if kind == "file_change":
        changes = tool_call(kind, item)["input"]["changes"]
        return "\n".join(f"{c['kind']} {c['path']}" for c in changes), failed
    if kind == "mcp_tool_call":
        error = item.get("error")
        if isinstance(error, dict):
            return text_field(error, "message"), True
        result = json_object(item.get("result"))
        content = result.get("content")
        texts = [
            text_field(block, "text")
            for block in (content if isinstance(content, list) else [])
            if isinstance(block, dict) and block.get("type") == "text"
        ]
        return "\n".join(texts), failed
    return "", failed
