"""OpenCode's server events -> payloads, over every recorded ``GET /event`` capture.

The captures (tests/fixtures/transcripts/opencode, see its README) are raw SSE bytes of a
real ``opencode serve`` 1.18.33; each turn is replayed through :class:`SseDecoder` and an
:class:`EventMapper` built for that turn's prompt, exactly as the agent does. Hypothesis
checks that chunking of the byte stream never matters and that garbage never crashes.
Also here: the pure parts of the adapter (SSE decoding limits, the generated server
config, the message-list replay used after a reconnect, prompt ids).
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeyard.adapters.cli.types import Parsed
from codeyard.adapters.opencode.config import (
    API_KEY_ENV,
    CONFIG_FILE,
    OpencodeConfig,
    permission_rules,
    permission_update,
    prompt_body,
    server_setup,
)
from codeyard.adapters.opencode.events import EventMapper, new_message_id, replay_messages
from codeyard.adapters.opencode.sse import SseDecoder, decode_all
from codeyard.domain.agent import AgentRequest, ResultStatus, TokenUsage
from codeyard.domain.events import (
    ErrorPayload,
    EventPayload,
    LifecyclePayload,
    MessagePayload,
    RawPayload,
    ResultPayload,
    ToolResultPayload,
    ToolUsePayload,
    UsagePayload,
)
from tests.unit.strategies import json_values

CAPTURES = Path(__file__).resolve().parent.parent / "fixtures" / "transcripts" / "opencode"
ALL_CAPTURES = sorted(p.stem for p in CAPTURES.glob("*.sse"))


def _capture(name: str) -> tuple[bytes, str, list[str]]:
    """Raw bytes, session id, and the prompt message id of each turn."""
    timeline = json.loads((CAPTURES / f"{name}.timeline.json").read_text())
    session = next(step["session"] for step in timeline if "session" in step)
    prompts = [step["messageID"] for step in timeline if "messageID" in step]
    return (CAPTURES / f"{name}.sse").read_bytes(), session, prompts


def _map(raw_chunks: list[bytes], session: str, prompt: str) -> list[Parsed]:
    mapper = EventMapper(session, prompt)
    return [parsed for event in decode_all(raw_chunks) for parsed in mapper.feed(event.data)]


def _turn(name: str, index: int = 0) -> list[EventPayload]:
    raw, session, prompts = _capture(name)
    return [p.payload for p in _map([raw], session, prompts[index])]


def _result(payloads: list[EventPayload]) -> ResultPayload:
    results = [p for p in payloads if isinstance(p, ResultPayload)]
    assert len(results) == 1, results
    assert payloads[-1] is results[0], "nothing is mapped after the turn's result"
    return results[0]


# --- every capture -------------------------------------------------------------------------


def test_the_captures_are_all_here() -> None:
    assert ALL_CAPTURES == [
        "serve-abort-stream",
        "serve-abort-tool",
        "serve-http-400",
        "serve-http-500-retries",
        "serve-tool-resume",
    ]


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_every_turn_of_every_capture_ends_in_one_result(name: str) -> None:
    raw, session, prompts = _capture(name)
    assert prompts
    for prompt in prompts:
        parsed = _map([raw], session, prompt)
        result = _result([p.payload for p in parsed]).result
        assert result.session_id == session
        assert result.provider == "opencode"
        # Every payload keeps the event it came from, verbatim JSON of this session.
        for item in parsed:
            assert item.raw is not None
            assert json.loads(item.raw)["properties"]["sessionID"] == session
        assert not any(isinstance(p.payload, RawPayload) for p in parsed)


def test_tool_call_then_answer() -> None:
    payloads = _turn("serve-tool-resume", 0)
    user = payloads[0]
    assert isinstance(user, MessagePayload)
    assert (user.role, user.text) == ("user", "write hello.txt")
    uses = [p for p in payloads if isinstance(p, ToolUsePayload)]
    results = [p for p in payloads if isinstance(p, ToolResultPayload)]
    assert [(u.name, u.input["content"]) for u in uses] == [("write", "hello\n")]
    assert [(r.tool_use_id, r.output, r.is_error) for r in results] == [
        (uses[0].tool_use_id, "Wrote file successfully.", False)
    ]
    assert payloads.index(uses[0]) < payloads.index(results[0])
    deltas = "".join(
        p.text for p in payloads if isinstance(p, MessagePayload) and p.delta and "Done" in p.text
    )
    assert deltas.startswith("Done: hello.txt")
    usages = [p for p in payloads if isinstance(p, UsagePayload)]
    assert len(usages) == 2  # one per model call (step-finish)
    result = _result(payloads).result
    assert result.status is ResultStatus.SUCCESS
    assert result.text == "Done: hello.txt written."
    assert result.usage == TokenUsage(input_tokens=200, output_tokens=80)
    assert result.cost_usd == 0.0
    assert result.turns == 2
    assert result.terminal_reason == "stop"
    assert LifecyclePayload(state="busy") in payloads


def test_second_turn_ignores_the_first() -> None:
    """The mapper of turn 2 sees the whole stream, turn 1 included: nothing of turn 1
    leaks into it (OpenCode re-sends turn 1's user message after it ended, too)."""
    payloads = _turn("serve-tool-resume", 1)
    assert not any(isinstance(p, ToolUsePayload | ToolResultPayload) for p in payloads)
    texts = [p.text for p in payloads if isinstance(p, MessagePayload) and not p.delta]
    assert texts == ["what did you do?", "Second turn: I wrote hello.txt before."]
    result = _result(payloads).result
    assert (result.status, result.text) == (ResultStatus.SUCCESS, texts[-1])
    assert result.usage == TokenUsage(input_tokens=100, output_tokens=40)


def test_abort_mid_stream_is_cancelled_with_the_streamed_text_as_deltas() -> None:
    payloads = _turn("serve-abort-stream")
    deltas = [p.text for p in payloads if isinstance(p, MessagePayload) and p.delta]
    assert "".join(deltas) == "tick. tick. tick. "
    assert ErrorPayload(message="Aborted", code="MessageAbortedError") in payloads
    result = _result(payloads).result
    assert (result.status, result.terminal_reason) == (ResultStatus.CANCELLED, "aborted")


def test_abort_mid_tool_is_cancelled_after_the_tool_started() -> None:
    payloads = _turn("serve-abort-tool")
    uses = [p for p in payloads if isinstance(p, ToolUsePayload)]
    assert [u.input["command"] for u in uses] == ["sleep 60; echo late > late.txt"]
    assert _result(payloads).result.status is ResultStatus.CANCELLED


def test_http_400_is_an_error_result() -> None:
    payloads = _turn("serve-http-400")
    errors = [p for p in payloads if isinstance(p, ErrorPayload)]
    assert [(e.code, e.retryable) for e in errors] == [("APIError", False)]
    assert "mock: forced error" in errors[0].message
    assert "HTTP 400" in errors[0].message
    result = _result(payloads).result
    assert result.status is ResultStatus.ERROR
    assert (result.error, result.terminal_reason) == ("mock: forced error", "APIError")


def test_http_500_retries_are_reported_then_the_error() -> None:
    payloads = _turn("serve-http-500-retries")
    retries = [p for p in payloads if isinstance(p, LifecyclePayload) and p.state == "retry"]
    assert [r.detail["attempt"] for r in retries] == [1, 2, 3, 4, 5]
    assert all(r.detail["message"] == "mock: upstream down" for r in retries)
    errors = [p for p in payloads if isinstance(p, ErrorPayload)]
    assert [(e.code, e.retryable) for e in errors] == [("APIError", True)]
    assert _result(payloads).result.status is ResultStatus.ERROR


# --- properties ----------------------------------------------------------------------------


def _cuts(raw: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(raw) + 1) for c in cuts})
    return [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(ALL_CAPTURES),
    cuts=st.lists(st.integers(min_value=0, max_value=10**6), max_size=40),
)
def test_chunking_of_the_byte_stream_never_changes_the_payloads(name: str, cuts: list[int]) -> None:
    raw, session, prompts = _capture(name)
    whole = _map([raw], session, prompts[-1])
    assert _map(_cuts(raw, cuts), session, prompts[-1]) == whole


@settings(max_examples=300)
@given(data=st.text(max_size=200))
def test_garbage_data_never_crashes(data: str) -> None:
    mapper = EventMapper("ses_x", "msg_x")
    for parsed in mapper.feed(data):
        assert isinstance(parsed.payload, RawPayload | ErrorPayload)
        assert parsed.raw == data


@settings(max_examples=300)
@given(
    kind=st.sampled_from(
        [
            "message.updated",
            "message.part.updated",
            "message.part.delta",
            "session.status",
            "session.error",
            "session.idle",
            "permission.asked",
            "something.new",
        ]
    ),
    props=st.dictionaries(st.sampled_from(["info", "part", "status", "error", "id"]), json_values),
    part=st.dictionaries(st.text(max_size=8), json_values, max_size=6),
)
def test_arbitrary_events_of_the_session_never_crash(
    kind: str, props: dict[str, Any], part: dict[str, Any]
) -> None:
    mapper = EventMapper("ses_x", "msg_p")
    # Arm the turn, then throw junk shaped like real events at it.
    mapper.feed(json.dumps(_event("message.updated", info={"id": "msg_p", "role": "user"})))
    mapper.feed(json.dumps(_event("message.updated", info=_answer("msg_a"))))
    shaped = (
        {**props, "part": {**part, "messageID": "msg_a"}}
        if kind.endswith("part.updated")
        else props
    )
    for parsed in mapper.feed(json.dumps(_event(kind, **shaped))):
        assert parsed.raw is not None


# --- hand-made edges -----------------------------------------------------------------------


_ids = itertools.count()


def _event(kind: str, session: str = "ses_x", **props: Any) -> dict[str, Any]:
    event_id = f"evt_{next(_ids)}"
    return {"id": event_id, "type": kind, "properties": {"sessionID": session, **props}}


def _answer(message_id: str, **info: Any) -> dict[str, Any]:
    return {"id": message_id, "role": "assistant", "parentID": "msg_p", **info}


def _armed() -> EventMapper:
    mapper = EventMapper("ses_x", "msg_p")
    assert mapper.feed(json.dumps(_event("session.idle"))) == []  # not armed: a leftover
    mapper.feed(json.dumps(_event("message.updated", info={"id": "msg_p", "role": "user"})))
    mapper.feed(json.dumps(_event("message.updated", info=_answer("msg_a"))))
    assert mapper.armed
    return mapper


def _feed(mapper: EventMapper, kind: str, **props: Any) -> list[EventPayload]:
    return [p.payload for p in mapper.feed(json.dumps(_event(kind, **props)))]


def test_other_sessions_and_server_events_are_ignored() -> None:
    mapper = _armed()
    assert _feed(mapper, "session.idle", sessionID="ses_other") == []
    heartbeat = {"id": "evt_h", "type": "server.heartbeat", "properties": {}}
    assert mapper.feed(json.dumps(heartbeat)) == []
    assert mapper.result is None


def test_tool_error_reasoning_retry_part_and_unknown_events() -> None:
    mapper = _armed()
    tool = {"id": "prt_t", "messageID": "msg_a", "type": "tool", "callID": "c1", "tool": "bash"}
    assert (
        _feed(mapper, "message.part.updated", part={**tool, "state": {"status": "pending"}}) == []
    )
    failed = {"status": "error", "input": {"command": "false"}, "error": "exit 1"}
    assert _feed(mapper, "message.part.updated", part={**tool, "state": failed}) == [
        ToolUsePayload(tool_use_id="c1", name="bash", input={"command": "false"}),
        ToolResultPayload(tool_use_id="c1", output="exit 1", is_error=True),
    ]
    reasoning = {"id": "prt_r", "messageID": "msg_a", "type": "reasoning", "text": ""}
    assert _feed(mapper, "message.part.updated", part=reasoning) == []
    delta = {"messageID": "msg_a", "partID": "prt_r", "field": "text", "delta": "hmm"}
    assert _feed(mapper, "message.part.delta", **delta) == [
        MessagePayload(kind="thinking", text="hmm", delta=True, message_id="msg_a")
    ]
    retry = {"id": "prt_x", "messageID": "msg_a", "type": "retry", "error": {"data": {}}}
    [error] = _feed(mapper, "message.part.updated", part=retry)
    assert isinstance(error, ErrorPayload)
    assert error.retryable
    assert _feed(mapper, "vcs.branch.updated") == [RawPayload(reason="unrecognized")]


def test_permission_requests_are_queued_for_rejection() -> None:
    mapper = _armed()
    [error] = _feed(mapper, "permission.asked", id="per_1", permission="bash")
    assert isinstance(error, ErrorPayload)
    assert error.code == "permission_rejected"
    assert mapper.asks == [("permission", "per_1")]


def test_replayed_events_are_not_emitted_twice() -> None:
    mapper = _armed()
    event = json.dumps(_event("session.status", status={"type": "retry", "attempt": 1}))
    assert mapper.feed(event) != []
    assert mapper.feed(event) == []


# --- replay after a reconnect --------------------------------------------------------------


@pytest.mark.parametrize("name", ["serve1", "serve2"])
def test_replaying_the_message_list_rebuilds_each_turn(name: str) -> None:
    messages = json.loads((CAPTURES / f"{name}-session-messages.json").read_text())
    session = messages[0]["info"]["sessionID"]
    prompts = [m["info"]["id"] for m in messages if m["info"]["role"] == "user"]
    assert len(prompts) == 4  # tool call, second turn, abort mid-stream, abort mid-tool
    first = EventMapper(session, prompts[0])
    parsed, complete = replay_messages(first, messages)
    assert complete
    kinds = [type(p.payload).__name__ for p in parsed]
    assert kinds.count("ToolUsePayload") == kinds.count("ToolResultPayload") == 1
    assert kinds.count("UsagePayload") == 2
    # A second replay (another reconnect) emits nothing new.
    assert replay_messages(first, messages) == ([], True)
    aborted = EventMapper(session, prompts[3])
    parsed, complete = replay_messages(aborted, messages)
    assert complete  # an aborted answer counts as ended
    assert ErrorPayload(message="Aborted", code="MessageAbortedError") in [
        p.payload for p in parsed
    ]


# --- SSE decoding --------------------------------------------------------------------------


def test_sse_fields_comments_ids_and_crlf() -> None:
    stream = b": keep-alive\r\nid: 7\r\nevent: x\r\ndata: a\r\ndata: b\r\n\r\ndata: c\n\n"
    events = decode_all([stream])
    assert [(e.data, e.event, e.id) for e in events] == [("a\nb", "x", "7"), ("c", "", "7")]
    assert decode_all([b"data: unterminated"]) == []


def test_an_over_long_event_is_flagged_not_parsed() -> None:
    decoder = SseDecoder(max_event_bytes=64)
    events = decoder.feed(b"data: " + b"x" * 500 + b"\n\ndata: ok\n\n")
    assert [(e.truncated, len(e.data) <= 64) for e in events] == [(True, True), (False, True)]
    assert events[1].data == "ok"


# --- server config -------------------------------------------------------------------------


def _request(**fields: Any) -> AgentRequest:
    fields.setdefault("prompt", "hi")
    return AgentRequest(provider="opencode", **fields)


def test_server_setup_with_a_model_server() -> None:
    request = _request(base_url="http://127.0.0.1:9999", model="m1", env={"OPENAI_API_KEY": "sk-1"})
    home = PurePosixPath("/w/home")
    setup = server_setup(OpencodeConfig(binary="/bin/oc"), request, home=home, port=4321)
    doc = json.loads(setup.files[CONFIG_FILE])
    provider = doc["provider"]["codeyard"]
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"] == {
        "baseURL": "http://127.0.0.1:9999/v1",
        "apiKey": f"{{env:{API_KEY_ENV}}}",
    }
    assert doc["model"] == "codeyard/m1" == setup.model
    assert "sk-1" not in setup.files[CONFIG_FILE]
    assert setup.env[API_KEY_ENV] == "sk-1"
    password = setup.env["OPENCODE_SERVER_PASSWORD"]
    assert {password, "sk-1"} <= set(setup.secrets)
    assert setup.env["HOME"] == "/w/home"
    assert setup.env["XDG_DATA_HOME"] == "/w/home/.local/share"
    for switch in ("AUTOUPDATE", "MODELS_FETCH", "LSP_DOWNLOAD", "SHARE"):
        assert setup.env[f"OPENCODE_DISABLE_{switch}"] == "1"
    assert setup.argv[:2] == ("/bin/sh", "-c")
    assert setup.argv[3:] == ("/bin/oc", "serve", "--hostname", "127.0.0.1", "--port", "4321")


def test_server_setup_keeps_home_and_password_and_fingerprints_the_config() -> None:
    config = OpencodeConfig()
    home = PurePosixPath("/h")
    hijack = {"HOME": "/elsewhere", "OPENCODE_SERVER_PASSWORD": "known"}
    one = server_setup(config, _request(model="a/b", env=hijack), home=home, port=1)
    assert one.env["HOME"] == "/h"
    assert one.env["OPENCODE_SERVER_PASSWORD"] != "known"
    again = server_setup(config, _request(model="a/b", env=hijack), home=home, port=2)
    assert again.fingerprint == one.fingerprint, "ports and passwords do not count"
    assert again.env["OPENCODE_SERVER_PASSWORD"] != one.env["OPENCODE_SERVER_PASSWORD"]
    other = server_setup(config, _request(model="a/c", env=hijack), home=home, port=1)
    assert other.fingerprint != one.fingerprint
    assert "provider" not in json.loads(one.files[CONFIG_FILE])  # no base URL: OpenCode's own


def test_permission_rules_deny_all_but_the_listed_commands() -> None:
    assert permission_rules(("pytest", " git status ")) == [
        {"permission": "bash", "pattern": "*", "action": "deny"},
        {"permission": "bash", "pattern": "pytest", "action": "allow"},
        {"permission": "bash", "pattern": "pytest *", "action": "allow"},
        {"permission": "bash", "pattern": "git status", "action": "allow"},
        {"permission": "bash", "pattern": "git status *", "action": "allow"},
    ]


def test_permission_updates_append_only_when_the_policy_changes() -> None:
    """OpenCode appends PATCHed rules and the last match wins (see permission_update)."""
    restricted = permission_rules(("ls",))
    allow_all = {"permission": "bash", "pattern": "*", "action": "allow"}
    assert permission_update([], ()) is None  # nothing restricts commands
    assert permission_update(None, ("ls",)) == restricted
    assert permission_update(restricted, ("ls",)) is None  # already in force
    assert permission_update(restricted, ()) == [allow_all]
    assert permission_update([*restricted, allow_all], ()) is None
    assert permission_update([*restricted, allow_all], ("ls",)) == restricted


def test_prompt_body() -> None:
    request = _request(prompt="do it", instructions="Be brief.", system_prompt_append="Rhyme.")
    body = prompt_body(request, "codeyard/m1", "msg_1")
    assert body == {
        "messageID": "msg_1",
        "parts": [{"type": "text", "text": "do it"}],
        "model": {"providerID": "codeyard", "modelID": "m1"},
        "system": "Be brief.\n\nRhyme.",
    }
    assert "model" not in prompt_body(_request(), None, "msg_2")


def test_prompt_ids_have_opencodes_ascending_shape() -> None:
    ids = [new_message_id() for _ in range(50)]
    assert all(re.fullmatch(r"msg_[0-9a-f]{12}[0-9A-Za-z]{14}", i) for i in ids)
    assert [i[:16] for i in ids] == sorted(i[:16] for i in ids)
    assert len(set(ids)) == 50
