"""The Router: one model server, a scenario per conversation chosen by a marker in the
conversation's user text, for each of the four dialects.

Request bodies are made by hand in the shapes the CLIs send: system prompts and tool
output holding OTHER markers (which must not route), context ahead of the prompt in the
first user message (Claude Code) or in user messages of its own (Codex, Gemini CLI).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

from codeyard.testing.model_server import ModelServer, Router, Scenario, Text, Usage
from codeyard.testing.model_server.router import UNROUTED, user_messages

pytestmark = pytest.mark.anyio

Json = dict[str, Any]

#: The decoy put in system prompts and tool output: it must never decide the route.
DECOY = "[review]"


def _anthropic(users: list[str], model_turns: int, tools: bool) -> Json:
    first, *rest = users
    # Claude Code: system-reminder blocks (CLAUDE.md, context) ahead of the prompt.
    content = [{"type": "text", "text": "<system-reminder>CLAUDE.md</system-reminder>"}]
    messages: list[Json] = [
        {"role": "user", "content": [*content, {"type": "text", "text": first}]}
    ]
    messages += [{"role": "user", "content": text} for text in rest]
    for n in range(model_turns):
        use = {"type": "tool_use", "id": f"t{n}", "name": "Bash", "input": {}}
        result = {"type": "tool_result", "tool_use_id": f"t{n}", "content": DECOY}
        messages += [
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}, use]},
            {"role": "user", "content": [result]},
        ]
    body: Json = {
        "model": "m",
        "max_tokens": 64,
        "system": [{"type": "text", "text": f"You are Claude Code. {DECOY}"}],
        "messages": messages,
    }
    if tools:
        body["tools"] = [{"name": "Bash", "input_schema": {"type": "object"}}]
    return body


def _chat(users: list[str], model_turns: int, tools: bool) -> Json:
    first, *rest = users
    messages: list[Json] = [
        {"role": "system", "content": f"You are OpenCode. {DECOY}"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "ctx"}, {"type": "text", "text": first}],
        },
    ]
    messages += [{"role": "user", "content": text} for text in rest]
    for n in range(model_turns):
        call = {"id": f"c{n}", "type": "function", "function": {"name": "x", "arguments": "{}"}}
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{n}", "content": DECOY},
        ]
    body: Json = {"model": "m", "messages": messages}
    if tools:
        body["tools"] = [{"type": "function", "function": {"name": "x", "parameters": {}}}]
    return body


def _responses(users: list[str], model_turns: int, tools: bool) -> Json:
    def message(role: str, text: str) -> Json:
        return {"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]}

    items = [message("developer", DECOY), *(message("user", text) for text in users)]
    for n in range(model_turns):
        items += [
            {"type": "reasoning", "summary": []},
            {"type": "function_call", "call_id": f"c{n}", "name": "x", "arguments": "{}"},
            {"type": "function_call_output", "call_id": f"c{n}", "output": DECOY},
        ]
    body: Json = {"model": "m", "instructions": f"You are Codex. {DECOY}", "input": items}
    if tools:
        body["tools"] = [{"type": "function", "name": "exec_command", "parameters": {}}]
    return body


def _gemini(users: list[str], model_turns: int, tools: bool) -> Json:
    contents: list[Json] = [{"role": "user", "parts": [{"text": text}]} for text in users]
    for _ in range(model_turns):
        response = {"functionResponse": {"name": "x", "response": {"output": DECOY}}}
        contents += [
            {"role": "model", "parts": [{"functionCall": {"name": "x", "args": {}}}]},
            {"role": "user", "parts": [response]},
        ]
    body: Json = {"contents": contents, "systemInstruction": {"parts": [{"text": DECOY}]}}
    if tools:
        body["tools"] = [{"functionDeclarations": [{"name": "x"}]}]
    return body


def _anthropic_text(reply: Json) -> str:
    return "".join(b["text"] for b in reply["content"] if b["type"] == "text")


def _chat_text(reply: Json) -> str:
    return str(reply["choices"][0]["message"]["content"])


def _responses_text(reply: Json) -> str:
    return "".join(
        p["text"] for i in reply["output"] if i["type"] == "message" for p in i["content"]
    )


def _gemini_text(reply: Json) -> str:
    return "".join(p.get("text", "") for p in reply["candidates"][0]["content"]["parts"])


@dataclass(frozen=True)
class Case:
    dialect: str
    path: str
    body: Callable[[list[str], int, bool], Json]
    text: Callable[[Json], str]


CASES = {
    "anthropic": Case("anthropic", "/v1/messages", _anthropic, _anthropic_text),
    "chat": Case("chat", "/v1/chat/completions", _chat, _chat_text),
    "responses": Case("responses", "/v1/responses", _responses, _responses_text),
    "gemini": Case("gemini", "/v1beta/models/m:generateContent", _gemini, _gemini_text),
}


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[str(request.param)]


def _router() -> Router:
    return Router(
        {
            "[task:a]": Scenario.text("A0", "A1", "A2 after feedback"),
            "[task:b]": Scenario.text("B0", "B1"),
            DECOY: Scenario.text("R0"),
        },
        default=Scenario.text("D0"),
    )


async def _ask(
    server: ModelServer, case: Case, users: list[str], model_turns: int = 0, tools: bool = True
) -> str:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client:
        response = await client.post(case.path, json=case.body(users, model_turns, tools))
    assert response.status_code == 200, response.text
    return case.text(response.json())


# --- per dialect, over HTTP -----------------------------------------------------------------


async def test_the_first_user_message_routes_not_the_system_prompt(case: Case) -> None:
    async with ModelServer(_router()) as server:
        assert await _ask(server, case, ["[task:a] write hello.py"]) == "A0"
        assert await _ask(server, case, ["please [task:b] too"]) == "B0"
        (first, second) = server.model_requests()
    assert (first.extra["route"], second.extra["route"]) == ("[task:a]", "[task:b]")
    assert server.routed_requests("[task:b]") == [second]


async def test_tool_output_holding_another_marker_does_not_route(case: Case) -> None:
    """Turn n of the routed scenario answers after n model responses, whose tool results
    all carry the decoy marker: the later round of a resumed conversation (a developer's
    round 2 after review feedback) continues its own script."""
    async with ModelServer(_router()) as server:
        assert await _ask(server, case, ["[task:a] go"], model_turns=1) == "A1"
        round_two = ["[task:a] go", "review feedback: add a test"]
        assert await _ask(server, case, round_two, model_turns=2) == "A2 after feedback"
        assert await _ask(server, case, ["[task:b] go"], model_turns=2) == "(scenario exhausted)"


async def test_marker_in_a_later_user_message_is_found(case: Case) -> None:
    # Codex and Gemini CLI send their environment context as a user message of its own.
    users = ["<environment_context>cwd=/work</environment_context>", "[task:b] go"]
    async with ModelServer(_router()) as server:
        assert await _ask(server, case, users) == "B0"


async def test_no_marker_gets_the_default(case: Case) -> None:
    async with ModelServer(_router()) as server:
        assert await _ask(server, case, ["just chat"]) == "D0"
        (record,) = server.model_requests()
    assert "route" not in record.extra


async def test_side_request_gets_the_routed_scenarios_side_reply(case: Case) -> None:
    side = Scenario(turns=[[Text("main")]], side_reply=[Text("title for a", chunk_size=0)])
    router = Router({"[task:a]": side}, default=Scenario.text("D0"))
    async with ModelServer(router) as server:
        assert await _ask(server, case, ["[task:a] go"], tools=False) == "title for a"


async def test_one_scenario_still_serves_every_conversation(case: Case) -> None:
    async with ModelServer(Scenario.text("same")) as server:
        assert await _ask(server, case, ["[task:a] go"]) == "same"
        assert "route" not in server.model_requests()[0].extra


# --- choosing among markers -------------------------------------------------------------------


def test_the_earliest_marker_in_the_message_wins_whatever_the_mapping_order() -> None:
    router = Router({"[task:a]": Scenario.text("A"), "[review]": Scenario.text("R")})
    prompt = "[review] PR #3 for the task: '[task:a] write hello.py'"
    body = _anthropic([prompt], 0, True)
    assert router.marker("anthropic", body) == "[review]"
    assert router.resolve("anthropic", body).turns[0][0] == Text("R")


def test_on_a_tie_the_longest_marker_wins() -> None:
    router = Router({"[task": Scenario.text("short"), "[task:a]": Scenario.text("long")})
    assert router.marker("chat", _chat(["[task:a] go"], 0, True)) == "[task:a]"


def test_the_first_message_with_a_marker_decides() -> None:
    router = _router()
    body = _gemini(["[task:b] go", "[task:a] later"], 0, True)
    assert router.marker("gemini", body) == "[task:b]"


def test_without_a_default_unrouted_conversations_get_a_visible_reply() -> None:
    router = Router({"[task:a]": Scenario.text("A")})
    assert router.resolve("chat", _chat(["hello"], 0, True)) is UNROUTED
    assert router.resolve("unknown-dialect", {"messages": []}) is UNROUTED


def test_an_empty_marker_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        Router({"": Scenario.text("x")})


def test_user_text_extraction_per_dialect() -> None:
    assert user_messages("anthropic", _anthropic(["p"], 1, True)) == [
        "<system-reminder>CLAUDE.md</system-reminder>\np"
    ]
    assert user_messages("chat", _chat(["p", "q"], 1, True)) == ["ctx\np", "q"]
    assert user_messages("responses", _responses(["p", "q"], 1, True)) == ["p", "q"]
    assert user_messages("responses", {"input": "short form"}) == ["short form"]
    assert user_messages("gemini", _gemini(["p"], 1, True)) == ["p"]
    # A Gemini content without a role is the user's; malformed parts are skipped.
    assert user_messages("gemini", {"contents": [{"parts": [{"text": "x"}, 3]}]}) == ["x"]
    assert user_messages("anthropic", {"messages": "not a list"}) == []


# --- concurrency and the rest of the app ------------------------------------------------------


async def test_concurrent_conversations_each_get_their_own_script() -> None:
    case = CASES["anthropic"]
    answers: dict[str, str] = {}
    async with ModelServer(_router()) as server:

        async def ask(marker: str) -> None:
            answers[marker] = await _ask(server, case, [f"{marker} go"])

        async with anyio.create_task_group() as tg:
            for marker in ("[task:a]", "[task:b]", DECOY, "[task:a]"):
                tg.start_soon(ask, marker)
    assert answers == {"[task:a]": "A0", "[task:b]": "B0", DECOY: "R0"}


async def test_count_tokens_uses_the_routed_scenarios_usage() -> None:
    big = Scenario(turns=[[Text("x")]], usage=Usage(input_tokens=777))
    router = Router({"[task:a]": big}, default=Scenario.text("d"))
    body = _anthropic(["[task:a] go"], 0, True)
    async with (
        ModelServer(router) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=10.0) as client,
    ):
        counted = await client.post("/v1/messages/count_tokens", json=body)
        default = await client.post("/v1/messages/count_tokens", json=_anthropic(["hi"], 0, True))
    assert counted.json() == {"input_tokens": 777}
    assert default.json() == {"input_tokens": Usage().input_tokens}
