"""The four API dialects of the scripted model server, each checked the way a client
reads it: a strict reassembly of the SSE stream (event order, block bookkeeping,
terminators) into text, tool calls, usage and stop reason.

Over HTTP with httpx + httpx-sse for the behaviours, and directly on the writers for the
hypothesis properties (any text, any JSON arguments survive the streaming).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeyard.testing.model_server import HttpError, ModelServer, Scenario, Text, ToolCall
from codeyard.testing.model_server.app import ANTHROPIC, CHAT, GEMINI, RESPONSES
from codeyard.testing.model_server.base import Dialect, Pause, Plan
from codeyard.testing.model_server.scenario import Selection, Usage

Json = dict[str, Any]
SseEvent = tuple[str, str]  # (event name or "", data)


@dataclass
class Assembled:
    """What a client makes of one streamed response."""

    text: str = ""
    calls: list[tuple[str, Json]] = field(default_factory=list)
    usage: Json = field(default_factory=dict)
    stop: str | None = None
    error: Json | None = None


# --- strict reassembly, one per dialect ---------------------------------------------------


def assemble_anthropic(events: list[SseEvent]) -> Assembled:
    out = Assembled()
    data = [json.loads(d) for _, d in events]
    for (name, _), item in zip(events, data, strict=True):
        assert name == item["type"], "event name and data type agree"
    if data[-1]["type"] == "error":
        out.error = data[-1]
        return out
    assert data[0]["type"] == "message_start"
    assert data[0]["message"]["usage"]["input_tokens"] > 0
    assert data[-1]["type"] == "message_stop"
    assert data[-2]["type"] == "message_delta"
    blocks: dict[int, Json] = {}
    open_index: int | None = None
    for item in data[1:-2]:
        kind = item["type"]
        if kind == "ping":
            continue
        index = item["index"]
        if kind == "content_block_start":
            assert open_index is None, "blocks do not nest"
            assert index == len(blocks), "blocks open in order"
            blocks[index] = {**item["content_block"], "json": ""}
            open_index = index
        elif kind == "content_block_delta":
            assert index == open_index
            delta = item["delta"]
            if delta["type"] == "text_delta":
                blocks[index]["text"] += delta["text"]
            else:
                assert delta["type"] == "input_json_delta"
                blocks[index]["json"] += delta["partial_json"]
        else:
            assert kind == "content_block_stop"
            assert index == open_index
            open_index = None
    assert open_index is None, "every block is stopped"
    for block in blocks.values():
        if block["type"] == "text":
            out.text += block["text"]
        else:
            assert block["type"] == "tool_use"
            assert block["id"].startswith("toolu_")
            out.calls.append((block["name"], json.loads(block["json"])))
    out.stop = data[-2]["delta"]["stop_reason"]
    out.usage = data[-2]["usage"]
    return out


def assemble_chat(events: list[SseEvent]) -> Assembled:
    out = Assembled()
    assert events[-1][1] == "[DONE]" or "error" in json.loads(events[-1][1])
    if events[-1][1] != "[DONE]":
        out.error = json.loads(events[-1][1])
        return out
    calls: dict[int, Json] = {}
    for _, raw in events[:-1]:
        chunk = json.loads(raw)
        assert chunk["object"] == "chat.completion.chunk"
        if chunk.get("usage"):
            out.usage = chunk["usage"]
        for choice in chunk["choices"]:
            delta = choice["delta"]
            out.text += delta.get("content") or ""
            for call in delta.get("tool_calls") or []:
                if "id" in call:
                    assert call["index"] not in calls
                    calls[call["index"]] = {"name": call["function"]["name"], "args": ""}
                calls[call["index"]]["args"] += call["function"].get("arguments") or ""
            if choice["finish_reason"] is not None:
                assert out.stop is None, "one finish_reason"
                out.stop = choice["finish_reason"]
    out.calls = [(c["name"], json.loads(c["args"])) for _, c in sorted(calls.items())]
    return out


def assemble_responses(events: list[SseEvent]) -> Assembled:
    out = Assembled()
    data = [json.loads(d) for _, d in events]
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    assert data[0]["type"] == "response.created"
    if data[-1]["type"] == "response.failed":
        out.error = data[-1]["response"]["error"]
        return out
    assert data[-1]["type"] == "response.completed"
    done_items: list[Json] = []
    added: set[str] = set()
    text_deltas: dict[str, str] = {}
    arg_deltas: dict[str, str] = {}
    for (name, _), item in zip(events, data, strict=True):
        kind = item["type"]
        assert name == kind
        if kind == "response.output_item.added":
            assert item["output_index"] == len(done_items)
            added.add(item["item"]["id"])
        elif kind == "response.output_text.delta":
            text_deltas[item["item_id"]] = text_deltas.get(item["item_id"], "") + item["delta"]
        elif kind == "response.output_text.done":
            assert item["text"] == text_deltas[item["item_id"]]
        elif kind == "response.function_call_arguments.delta":
            arg_deltas[item["item_id"]] = arg_deltas.get(item["item_id"], "") + item["delta"]
        elif kind == "response.function_call_arguments.done":
            assert item["arguments"] == arg_deltas[item["item_id"]]
        elif kind == "response.output_item.done":
            assert item["item"]["id"] in added
            assert item["output_index"] == len(done_items)
            done_items.append(item["item"])
    final = data[-1]["response"]
    assert final["status"] == "completed"
    assert final["output"] == done_items
    for item in done_items:
        if item["type"] == "message":
            out.text += "".join(part["text"] for part in item["content"])
        else:
            out.calls.append((item["name"], json.loads(item["arguments"])))
    out.usage = final["usage"]
    out.stop = final["status"]
    return out


def assemble_gemini(events: list[SseEvent]) -> Assembled:
    out = Assembled()
    data = [json.loads(d) for _, d in events]
    if "error" in data[-1]:
        out.error = data[-1]["error"]
        return out
    for position, chunk in enumerate(data):
        candidate = chunk["candidates"][0]
        last = position == len(data) - 1
        assert ("finishReason" in candidate) == last, "only the last chunk finishes"
        for part in candidate["content"]["parts"]:
            if "functionCall" in part:
                out.calls.append((part["functionCall"]["name"], part["functionCall"]["args"]))
            else:
                out.text += part["text"]
    out.stop = data[-1]["candidates"][0]["finishReason"]
    out.usage = data[-1]["usageMetadata"]
    return out


# --- one case per dialect -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    dialect: Dialect
    path: str
    assemble: Callable[[list[SseEvent]], Assembled]
    request: Callable[[int, bool], Json]  # (model turns in history, stream) -> body
    tool_stop: str
    text_stop: str
    output_tokens: Callable[[Json], int]
    complete_parts: Callable[[Json], tuple[str, list[tuple[str, Json]]]]


def _anthropic_body(turns: int, stream: bool) -> Json:
    messages: list[Json] = [{"role": "user", "content": "go"}]
    for _ in range(turns):
        messages += [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]
    tools = [{"name": "Write", "input_schema": {"type": "object"}}]
    return {"model": "m", "max_tokens": 64, "stream": stream, "messages": messages, "tools": tools}


def _chat_body(turns: int, stream: bool) -> Json:
    messages: list[Json] = [{"role": "system", "content": "s"}, {"role": "user", "content": "go"}]
    for n in range(turns):
        call = {"id": f"c{n}", "type": "function", "function": {"name": "x", "arguments": "{}"}}
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{n}", "content": "done"},
        ]
    tools = [{"type": "function", "function": {"name": "x", "parameters": {}}}]
    return {"model": "m", "stream": stream, "messages": messages, "tools": tools}


def _responses_body(turns: int, stream: bool) -> Json:
    items: list[Json] = [{"type": "message", "role": "user", "content": [{"type": "input_text"}]}]
    for n in range(turns):
        # One response = a reasoning item, a message and a call: consecutive, counted once.
        items += [
            {"type": "reasoning", "summary": []},
            {"type": "message", "role": "assistant", "content": []},
            {"type": "function_call", "call_id": f"c{n}", "name": "x", "arguments": "{}"},
            {"type": "function_call_output", "call_id": f"c{n}", "output": "done"},
        ]
    tools = [{"type": "function", "name": "exec_command", "parameters": {}}]
    return {"model": "m", "stream": stream, "input": items, "tools": tools}


def _gemini_body(turns: int, stream: bool) -> Json:
    contents: list[Json] = [{"role": "user", "parts": [{"text": "go"}]}]
    for _ in range(turns):
        contents += [
            {"role": "model", "parts": [{"functionCall": {"name": "x", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "x", "response": {}}}]},
        ]
    return {"contents": contents, "tools": [{"functionDeclarations": [{"name": "x"}]}]}


def _anthropic_parts(reply: Json) -> tuple[str, list[tuple[str, Json]]]:
    assert reply["type"] == "message"
    assert reply["stop_reason"] == "tool_use"
    text = "".join(b["text"] for b in reply["content"] if b["type"] == "text")
    return text, [(b["name"], b["input"]) for b in reply["content"] if b["type"] == "tool_use"]


def _chat_parts(reply: Json) -> tuple[str, list[tuple[str, Json]]]:
    assert reply["object"] == "chat.completion"
    assert reply["usage"]["total_tokens"] > 0
    message = reply["choices"][0]["message"]
    calls = [
        (c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in message["tool_calls"]
    ]
    return message["content"], calls


def _responses_parts(reply: Json) -> tuple[str, list[tuple[str, Json]]]:
    assert reply["object"] == "response"
    assert reply["status"] == "completed"
    text = "".join(
        p["text"] for i in reply["output"] if i["type"] == "message" for p in i["content"]
    )
    calls = [
        (i["name"], json.loads(i["arguments"]))
        for i in reply["output"]
        if i["type"] == "function_call"
    ]
    return text, calls


def _gemini_parts(reply: Json) -> tuple[str, list[tuple[str, Json]]]:
    assert reply["candidates"][0]["finishReason"] == "STOP"
    assert reply["usageMetadata"]
    parts = reply["candidates"][0]["content"]["parts"]
    text = "".join(p.get("text", "") for p in parts)
    return text, [
        (p["functionCall"]["name"], p["functionCall"]["args"]) for p in parts if "functionCall" in p
    ]


CASES = {
    "anthropic": Case(
        ANTHROPIC, "/v1/messages?beta=true", assemble_anthropic, _anthropic_body,
        "tool_use", "end_turn", lambda u: int(u["output_tokens"]), _anthropic_parts,
    ),
    "chat": Case(
        CHAT, "/v1/chat/completions", assemble_chat, _chat_body,
        "tool_calls", "stop", lambda u: int(u["completion_tokens"]), _chat_parts,
    ),
    "responses": Case(
        RESPONSES, "/v1/responses", assemble_responses, _responses_body,
        "completed", "completed", lambda u: int(u["output_tokens"]), _responses_parts,
    ),
    "gemini": Case(
        GEMINI, "/v1beta/models/gemini-x:streamGenerateContent?alt=sse", assemble_gemini,
        _gemini_body, "STOP", "STOP", lambda u: int(u["candidatesTokenCount"]), _gemini_parts,
    ),
}  # fmt: skip


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[str(request.param)]


async def stream_events(server: ModelServer, case: Case, turns: int = 0) -> list[SseEvent]:
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client,
        aconnect_sse(client, "POST", case.path, json=case.request(turns, True)) as source,
    ):
        assert source.response.status_code == 200
        return [(_name(event.event), event.data) async for event in source.aiter_sse()]


def _name(event: str) -> str:
    # httpx-sse reports "message" for events without an ``event:`` line.
    return "" if event == "message" else event


# --- behaviours over HTTP -----------------------------------------------------------------

pytestmark = pytest.mark.anyio

ARGS = {"file_path": "/tmp/ä b/hello.txt", "content": 'line 1\nline "2"\t✓', "n": [1, 2.5]}


async def test_text_then_tool_call_reassembles_with_usage(case: Case) -> None:
    scenario = Scenario(turns=[[Text("I'll write it.", chunk_size=4), ToolCall("Write", ARGS)]])
    async with ModelServer(scenario) as server:
        got = case.assemble(await stream_events(server, case))
    assert got.text == "I'll write it."
    assert got.calls == [("Write", ARGS)]
    assert got.stop == case.tool_stop
    assert case.output_tokens(got.usage) == Usage().output_tokens


async def test_parallel_tool_calls_keep_their_order(case: Case) -> None:
    calls = [ToolCall("a", {"x": 1}), ToolCall("b", {"y": [True, None]})]
    async with ModelServer(Scenario(turns=[calls])) as server:
        got = case.assemble(await stream_events(server, case))
    assert got.calls == [("a", {"x": 1}), ("b", {"y": [True, None]})]


async def test_turn_is_chosen_from_the_history_in_the_body(case: Case) -> None:
    scenario = Scenario.text("first", "second", "third")
    async with ModelServer(scenario) as server:
        answers = [
            case.assemble(await stream_events(server, case, turns=n)).text for n in (2, 0, 1, 5)
        ]
        recorded = [(r.kind, r.turn) for r in server.requests]
    assert answers == ["third", "first", "second", "(scenario exhausted)"]
    assert recorded == [("main", 2), ("main", 0), ("main", 1), ("exhausted", 5)]


async def test_request_without_tools_gets_the_side_reply(case: Case) -> None:
    scenario = Scenario(turns=[[ToolCall("Write", ARGS)]], side_reply=[Text("A title")])
    body = case.request(0, True)
    body.pop("tools")
    async with (
        ModelServer(scenario) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as client,
        aconnect_sse(client, "POST", case.path, json=body) as source,
    ):
        events = [
            (e.event if e.event != "message" else "", e.data) async for e in source.aiter_sse()
        ]
        assert server.requests[0].kind == "side"
    assert case.assemble(events).text == "A title"
    assert case.assemble(events).stop == case.text_stop


async def test_unicode_and_one_megabyte_survive(case: Case) -> None:
    unicode = 'héllo 🌍 中文 עברית e\u0301 \u2028 \\n "q" \x00 end'
    big = ("0123456789abcdef" * 65536) + "✓"
    scenario = Scenario(turns=[[Text(unicode, chunk_size=1)], [Text(big, chunk_size=65536)]])
    async with ModelServer(scenario) as server:
        small_text = case.assemble(await stream_events(server, case, turns=0)).text
        big_text = case.assemble(await stream_events(server, case, turns=1)).text
    assert small_text == unicode
    assert len(big_text) == len(big)
    assert big_text == big


@pytest.mark.parametrize("status", [429, 500, 529])
async def test_http_error_status_and_provider_error_body(case: Case, status: int) -> None:
    scenario = Scenario(turns=[[HttpError(status, headers={"x-should-retry": "false"})]])
    async with (
        ModelServer(scenario) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as client,
    ):
        response = await client.post(case.path, json=case.request(0, True))
        assert server.requests[0].status == status
    assert response.status_code == status
    assert response.headers["x-should-retry"] == "false"
    assert response.json() == case.dialect.error_body(status, None)
    assert "error" in response.json()


async def test_custom_error_body_is_sent_verbatim(case: Case) -> None:
    body = {"error": {"message": "custom", "code": "x"}}
    async with (
        ModelServer(Scenario(turns=[[HttpError(400, body=body)]])) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as client,
    ):
        response = await client.post(case.path, json=case.request(0, True))
    assert (response.status_code, response.json()) == (400, body)


async def test_error_after_output_is_an_in_stream_error(case: Case) -> None:
    scenario = Scenario(turns=[[Text("partial"), HttpError(529, message="Overloaded")]])
    async with ModelServer(scenario) as server:
        got = case.assemble(await stream_events(server, case))
    assert got.error is not None
    assert "Overloaded" in json.dumps(got.error)


async def test_non_streaming_reply_carries_text_and_calls(case: Case) -> None:
    path = case.path.replace(":streamGenerateContent?alt=sse", ":generateContent")
    scenario = Scenario(turns=[[Text("hi"), ToolCall("Write", ARGS)]])
    async with (
        ModelServer(scenario) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as client,
    ):
        response = await client.post(path, json=case.request(0, False))
        assert not server.requests[0].stream
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert case.complete_parts(response.json()) == ("hi", [("Write", ARGS)])


# --- properties on the writers ------------------------------------------------------------


def parse_sse(raw: bytes) -> list[SseEvent]:
    """A strict SSE reader: every event ends with a blank line, ``data`` on one line."""
    text = raw.decode()
    assert text.endswith("\n\n")
    events: list[SseEvent] = []
    for block in text[:-2].split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        assert set(fields) <= {"event", "data"}
        events.append((fields.get("event", ""), fields["data"]))
    return events


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
tool_calls = st.builds(
    ToolCall,
    name=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True),
    arguments=st.dictionaries(st.text(), json_values, max_size=4),
)
texts = st.builds(Text, text=st.text(min_size=1), chunk_size=st.integers(0, 8))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(CASES)), steps=st.lists(texts | tool_calls, max_size=5))
def test_any_text_and_arguments_survive_streaming(name: str, steps: list[Any]) -> None:
    case = CASES[name]
    plan = Plan(Selection("main", 0, tuple(steps)), "m", Usage())
    frames = list(case.dialect.writer(plan).play())
    assert not any(isinstance(frame, Pause) for frame in frames)
    got = case.assemble(parse_sse(b"".join(f for f in frames if isinstance(f, bytes))))
    assert got.text == "".join(s.text for s in steps if isinstance(s, Text))
    expected: list[tuple[str, Mapping[str, Any]]] = [
        (s.name, s.arguments) for s in steps if isinstance(s, ToolCall)
    ]
    assert got.calls == expected
