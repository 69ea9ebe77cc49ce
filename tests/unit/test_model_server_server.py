"""The scripted model server itself: recording, timing (delay, stall), shutdown, side
paths, addresses, and the stateless turn selection."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from functools import partial

import anyio
import httpx
import pytest
from httpx_sse import aconnect_sse

from codeyard.domain.errors import ServiceUnavailable
from codeyard.testing.model_server import (
    Delay,
    ModelServer,
    Scenario,
    Stall,
    Text,
    ToolCall,
)
from codeyard.testing.model_server.scenario import count_runs

pytestmark = pytest.mark.anyio

MESSAGES = "/v1/messages?beta=true"


def _body(stream: bool = True, **extra: object) -> dict[str, object]:
    return {
        "model": "claude-x",
        "max_tokens": 10,
        "stream": stream,
        "messages": [{"role": "user", "content": "héllo"}],
        "tools": [{"name": "Bash", "input_schema": {}}],
        **extra,
    }


async def _wait_for(predicate: Callable[[], bool]) -> None:
    """Poll a condition the server updates from its own tasks (5 s at most)."""
    for _ in range(250):
        if predicate():
            return
        await anyio.sleep(0.02)
    pytest.fail("condition not reached within 5 s")


async def _collect_events(url: str, into: list[str], *, read_timeout: float) -> None:
    async with (
        httpx.AsyncClient(base_url=url, timeout=read_timeout) as client,
        aconnect_sse(client, "POST", MESSAGES, json=_body()) as source,
    ):
        async for event in source.aiter_sse():
            into.append(event.event)


async def test_requests_are_recorded_with_body_headers_and_outcome() -> None:
    async with (
        ModelServer(Scenario.text("hi")) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as client,
    ):
        response = await client.post(MESSAGES, json=_body(), headers={"x-api-key": "sk-test"})
        await response.aread()
        missing = await client.get("/v2/nothing?x=1")
    first, second = server.requests
    assert (first.method, first.path, first.query, first.target) == (
        "POST",
        "/v1/messages",
        "beta=true",
        MESSAGES,
    )
    assert first.headers["x-api-key"] == "sk-test"
    assert first.body == _body()
    assert (first.dialect, first.kind, first.turn, first.status) == ("anthropic", "main", 0, 200)
    assert first.stream
    assert first.outcome == "completed"
    assert missing.status_code == 404
    assert (second.method, second.target, second.status, second.dialect) == (
        "GET",
        "/v2/nothing?x=1",
        404,
        None,
    )
    assert server.model_requests() == [first]


async def test_health_listings_and_token_counts() -> None:
    async with (
        ModelServer(Scenario.text("hi")) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as client,
    ):
        health = (await client.get("/health")).json()
        claude_probe = await client.head("/api/hello")
        openai_models = (await client.get("/v1/models")).json()
        anthropic_models = (
            await client.get("/v1/models", headers={"anthropic-version": "2023-06-01"})
        ).json()
        gemini_models = (await client.get("/v1beta/models")).json()
        count = (await client.post("/v1/messages/count_tokens", json=_body())).json()
        gemini_count = (await client.post("/v1beta/models/g:countTokens", json={})).json()
    assert health == {"status": "ok"}
    assert claude_probe.status_code == 200
    assert openai_models["object"] == "list"
    assert openai_models["data"][0]["object"] == "model"
    assert anthropic_models["data"][0]["type"] == "model"
    assert gemini_models["models"][0]["name"].startswith("models/")
    assert count == {"input_tokens": 100}
    assert gemini_count == {"totalTokens": 100}


async def test_malformed_and_gzip_bodies() -> None:
    async with (
        ModelServer(Scenario.text("hi")) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as client,
    ):
        bad = await client.post(MESSAGES, content=b"{not json")
        packed = gzip.compress(json.dumps(_body(stream=False)).encode())
        good = await client.post(MESSAGES, content=packed, headers={"content-encoding": "gzip"})
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert server.requests[0].body is None
    assert server.requests[0].raw_body == b"{not json"
    assert good.status_code == 200
    assert good.json()["content"] == [{"type": "text", "text": "hi"}]


async def test_stall_keeps_the_connection_open_until_the_client_gives_up() -> None:
    scenario = Scenario(turns=[[Text("before the stall"), Stall()]])
    received: list[str] = []
    async with ModelServer(scenario) as server:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await _collect_events(server.base_url, received, read_timeout=0.5)
        elapsed = time.monotonic() - started
        # The client is gone: the server notices and records it.
        await _wait_for(lambda: server.requests[0].outcome == "disconnected")
    assert "content_block_delta" in received, "output was sent before the stall"
    assert "message_stop" not in received
    assert elapsed >= 0.5


async def test_finite_stall_then_the_stream_completes() -> None:
    scenario = Scenario(turns=[[Text("a"), Stall(0.6), Text("b")]])
    async with (
        ModelServer(scenario) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=5) as client,
        aconnect_sse(client, "POST", MESSAGES, json=_body()) as source,
    ):
        stamps = [(event.event, time.monotonic()) async for event in source.aiter_sse()]
    deltas = [t for name, t in stamps if name == "content_block_delta"]
    assert len(deltas) == 2
    assert deltas[1] - deltas[0] >= 0.55
    assert stamps[-1][0] == "message_stop"
    assert server.requests[0].outcome == "completed"


async def test_leading_delay_holds_back_the_response_headers() -> None:
    scenario = Scenario(turns=[[Delay(0.6), Text("slow model")]])
    async with (
        ModelServer(scenario) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=5) as client,
    ):
        started = time.monotonic()
        async with client.stream("POST", MESSAGES, json=_body()) as response:
            headers_after = time.monotonic() - started
            body = (await response.aread()).decode()
    assert headers_after >= 0.55
    assert "slow model" in body


async def test_stop_with_a_stalled_stream_is_prompt_and_ends_the_stream() -> None:
    scenario = Scenario(turns=[[Text("x"), Stall()]])
    events: list[str] = []
    server = ModelServer(scenario, shutdown_timeout=1.0)

    async with anyio.create_task_group() as tg:
        async with server:
            tg.start_soon(partial(_collect_events, server.base_url, events, read_timeout=30))
            await _wait_for(lambda: "content_block_delta" in events or bool(server.requests))
            await anyio.sleep(0.2)
            started = time.monotonic()
        stop_took = time.monotonic() - started
    assert stop_took < 4.0
    assert server.requests[0].outcome == "aborted"
    assert "message_start" in events


async def test_server_stops_when_its_caller_is_cancelled_and_frees_the_port() -> None:
    server = ModelServer(Scenario.text("hi"))
    with anyio.move_on_after(0.3):
        async with server:
            port = server.port
            await anyio.sleep(30)
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=2) as client:
            await client.get(f"http://127.0.0.1:{port}/health")


async def test_all_interfaces_and_addresses() -> None:
    async with (
        ModelServer(Scenario.text("hi"), host="0.0.0.0") as server,
        httpx.AsyncClient(timeout=5) as client,
    ):
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        # Any interface works the way the Docker bridge does; loopback always exists.
        via_lo = server.bridge_base_url("lo")
        assert via_lo == server.base_url
        assert (await client.get(f"{via_lo}/health")).status_code == 200
        with pytest.raises(ServiceUnavailable):
            server.bridge_base_url("no-such-if0")
    async with ModelServer(Scenario.text("hi")) as local:
        with pytest.raises(RuntimeError, match=r"0\.0\.0\.0"):
            local.bridge_base_url()


async def test_scenario_can_override_the_side_request_rule() -> None:
    scenario = Scenario(
        turns=[[ToolCall("Bash", {"command": "true"})]],
        side_reply=[Text("side")],
        is_side=lambda dialect, body: body.get("max_tokens") == 1,
    )
    async with (
        ModelServer(scenario) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=5) as client,
    ):
        quota = await client.post(MESSAGES, json=_body(stream=False, max_tokens=1))
        main = await client.post(MESSAGES, json=_body(stream=False, tools=[]))
    assert quota.json()["content"] == [{"type": "text", "text": "side"}]
    assert main.json()["content"][0]["type"] == "tool_use"
    assert [r.kind for r in server.requests] == ["side", "main"]


def test_selection_and_run_counting() -> None:
    scenario = Scenario.text("a", "b")
    assert scenario.select(model_turns=1, side=False).steps == (Text("b"),)
    assert scenario.select(model_turns=0, side=True).kind == "side"
    assert scenario.select(model_turns=2, side=False).kind == "exhausted"
    assert count_runs([]) == 0
    assert count_runs([False, True, True, False, True]) == 2
    assert Text("abcdé", chunk_size=2).chunks() == ["ab", "cd", "é"]
    assert Text("abc", chunk_size=0).chunks() == ["abc"]
