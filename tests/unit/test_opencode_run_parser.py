"""OpencodeRunParser over every recorded ``opencode run --format json`` transcript, plus
properties; the invocation OpencodeRunSpec builds; and the run loop replaying transcripts
(a clean exit after the final step is a success, not a missing result)."""

from __future__ import annotations

import contextlib
import functools
import json
import signal
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeyard.adapters.cli.agent import local_agent
from codeyard.adapters.cli.types import Parsed
from codeyard.adapters.opencode.config import API_KEY_ENV, CONFIG_FILE, OpencodeConfig
from codeyard.adapters.opencode.run_parser import PROVIDER, OpencodeRunParser
from codeyard.adapters.opencode.run_spec import (
    RULES_FILE,
    OpencodeRunOptions,
    OpencodeRunSpec,
)
from codeyard.domain.agent import AgentRequest, ResultStatus, TokenUsage
from codeyard.domain.errors import InvalidInput, InvalidRequest, UnsupportedProvider
from codeyard.domain.events import (
    AgentEvent,
    ErrorPayload,
    InitPayload,
    LifecyclePayload,
    MessagePayload,
    RawPayload,
    ResultPayload,
    ToolResultPayload,
    ToolUsePayload,
    UsagePayload,
)
from tests.unit import parser_support as kit
from tests.unit.parser_support import the_result, types

#: Verbatim copies of shared/agent-transcripts/opencode/run*.stream.jsonl, and of
#: docker/opencode.stream.jsonl as docker-run1 (see the folder's README).
TRANSCRIPTS = kit.transcript_dir("opencode", "run")
ALL_TRANSCRIPTS = sorted(TRANSCRIPTS.glob("*.stream.jsonl"))
SESSION = "ses_test"
_read = functools.partial(kit.read_transcript, TRANSCRIPTS)


def feed_all(lines: list[str], parser: OpencodeRunParser | None = None) -> list[Parsed]:
    return kit.feed_each(parser or OpencodeRunParser(), lines)


def line(kind: str, part: Mapping[str, object] | None = None, **fields: object) -> str:
    event: dict[str, object] = {"type": kind, "timestamp": 1, "sessionID": SESSION, **fields}
    if part is not None:
        event["part"] = {"sessionID": SESSION, "messageID": "msg_1", **part}
    return json.dumps(event)


def step_finish(part_id: str, reason: str, *, output: int = 5, cost: float = 0.0) -> str:
    tokens = {"input": 10, "output": output, "reasoning": 1, "cache": {"read": 2, "write": 3}}
    return line(
        "step_finish",
        {"id": part_id, "type": "step-finish", "reason": reason, "tokens": tokens, "cost": cost},
    )


# --- every transcript ----------------------------------------------------------------------


def test_the_recorded_transcripts_are_all_there() -> None:
    names = {p.name for p in ALL_TRANSCRIPTS}
    assert names == {
        "run1.stream.jsonl",
        "run2-resume.stream.jsonl",
        "run3-sigint.stream.jsonl",
        "run4-sigterm.stream.jsonl",
        "run6-force-error.stream.jsonl",
        "run7-capture-bodies.stream.jsonl",
        "docker-run1.stream.jsonl",
    }


@pytest.mark.parametrize("path", ALL_TRANSCRIPTS, ids=lambda p: p.name)
def test_every_transcript_is_understood_line_by_line(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    parser = OpencodeRunParser()
    results: list[ResultPayload] = []
    for text in lines:
        parsed = parser.feed(text)
        own = [p for p in parsed if p.raw is not None]
        assert own, f"{path.name}: a line gave nothing: {text}"
        assert all(p.raw == text for p in own)
        for item in parsed:
            assert not isinstance(item.payload, RawPayload), f"{path.name}: {text}"
            if item.raw is None:  # made by the parser, not printed by the CLI
                assert isinstance(item.payload, InitPayload | ResultPayload)
            if isinstance(item.payload, ResultPayload):
                results.append(item.payload)
    assert parser.session_id == json.loads(lines[0])["sessionID"]
    if path.name == "run4-sigterm.stream.jsonl":
        assert results == [], "killed mid-stream: the turn never ended"
        return
    [result] = results
    assert result.result.session_id == parser.session_id
    assert result.result.provider == PROVIDER
    if path.name == "run6-force-error.stream.jsonl":
        assert result.result.status is ResultStatus.ERROR
    else:
        assert result.result.status is ResultStatus.SUCCESS, result.result
        assert result.result.terminal_reason == "stop"
        assert result.result.text


def test_a_tool_call_then_an_answer() -> None:
    parsed = feed_all(_read("run1.stream.jsonl"))
    assert types(parsed) == [
        "init",
        "lifecycle",
        "message",
        "tool_use",
        "tool_result",
        "usage",
        "lifecycle",
        "message",
        "usage",
        "result",
    ]
    init = parsed[0].payload
    assert isinstance(init, InitPayload)
    assert init.session_id == "ses_dfd61ed81ffeZwFkIHIe7XAtoN"
    step = parsed[1].payload
    assert isinstance(step, LifecyclePayload)
    assert step.state == "step_started"
    assert step.detail == {"message_id": "msg_2029e18b4001xFniNoEWmhvX45"}
    use, tool_result = parsed[3].payload, parsed[4].payload
    assert isinstance(use, ToolUsePayload)
    assert isinstance(tool_result, ToolResultPayload)
    assert (use.name, use.input) == ("bash", {"command": "echo hello > hello.txt"})
    assert use.tool_use_id == tool_result.tool_use_id == "call_359e0e2485f3434f8f93"
    assert (tool_result.output, tool_result.is_error) == ("(no output)", False)
    texts = [p.payload.text for p in parsed if isinstance(p.payload, MessagePayload)]
    assert texts == [
        "I'll create the file.",
        "Done: I created hello.txt in the working directory. (history items: 4)",
    ]
    result = the_result(parsed).result
    assert result.status is ResultStatus.SUCCESS
    assert result.text == texts[-1]
    assert result.usage == TokenUsage(input_tokens=100, output_tokens=40)
    assert (result.turns, result.cost_usd, result.error) == (2, 0.0, None)


def test_resume_turn_and_the_ignored_sigint() -> None:
    resumed = the_result(feed_all(_read("run2-resume.stream.jsonl"))).result
    assert resumed.session_id == "ses_dfd61ed81ffeZwFkIHIe7XAtoN"
    assert resumed.text == "Second turn answer without tools (history items: 6)"
    ticked = the_result(feed_all(_read("run3-sigint.stream.jsonl"))).result
    assert ticked.status is ResultStatus.SUCCESS
    assert ticked.text.endswith("tick 59. ")


def test_a_model_error_becomes_an_error_event_and_an_error_result() -> None:
    parsed = feed_all(_read("run6-force-error.stream.jsonl"))
    assert types(parsed) == ["init", "error", "result"]
    error = parsed[1].payload
    assert isinstance(error, ErrorPayload)
    assert error == ErrorPayload(
        message="mock: forced error (HTTP 400)", code="APIError", retryable=False
    )
    result = the_result(parsed).result
    assert result.status is ResultStatus.ERROR
    assert (result.error, result.terminal_reason) == (error.message, "APIError")
    assert result.session_id == "ses_dfd4ba594ffeJ9n6Cx6oMHWSED"


# --- edges ---------------------------------------------------------------------------------


def test_only_a_step_that_ends_the_turn_makes_the_result() -> None:
    parser = OpencodeRunParser()
    assert "result" not in types(feed_all([step_finish("p1", "tool-calls")], parser))
    assert "result" not in types(feed_all([step_finish("p2", "unknown")], parser))
    assert "result" not in types(feed_all([step_finish("p3", "error")], parser))
    parsed = feed_all([step_finish("p4", "length", output=7, cost=0.25)], parser)
    assert types(parsed) == ["usage", "result"]
    usage = parsed[0].payload
    assert isinstance(usage, UsagePayload)
    assert usage.usage == TokenUsage(
        input_tokens=10, output_tokens=8, cache_read_tokens=2, cache_write_tokens=3
    )
    result = the_result(parsed).result
    assert (result.status, result.terminal_reason, result.turns) == (
        ResultStatus.SUCCESS,
        "length",
        4,
    )
    assert result.cost_usd == 0.25
    assert result.usage.output_tokens == 6 + 6 + 6 + 8


def test_only_the_first_result_is_the_result() -> None:
    parser = OpencodeRunParser()
    first = feed_all([step_finish("p1", "stop")], parser)
    assert types(first) == ["init", "usage", "result"]
    again = feed_all([step_finish("p2", "stop"), line("error", error={"name": "APIError"})], parser)
    assert types(again) == ["usage", "error"]


def test_an_abort_is_a_cancelled_result_and_a_failed_tool_an_error_result() -> None:
    tool = {
        "id": "prt_t",
        "type": "tool",
        "tool": "bash",
        "callID": "call_1",
        "state": {"status": "error", "input": {"command": "false"}, "error": "exit 1"},
    }
    aborted = {"name": "MessageAbortedError", "data": {"message": "The operation was aborted."}}
    parsed = feed_all([line("tool_use", tool), line("error", error=aborted)])
    assert types(parsed) == ["init", "tool_use", "tool_result", "error", "result"]
    failed = parsed[2].payload
    assert isinstance(failed, ToolResultPayload)
    assert (failed.output, failed.is_error) == ("exit 1", True)
    result = the_result(parsed).result
    assert (result.status, result.terminal_reason) == (ResultStatus.CANCELLED, "aborted")


def test_reasoning_is_a_thinking_message() -> None:
    part = {"id": "prt_r", "type": "reasoning", "text": "hmm", "time": {"start": 1, "end": 2}}
    [_, thinking] = feed_all([line("reasoning", part)])
    assert thinking.payload == MessagePayload(kind="thinking", text="hmm", message_id="msg_1")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "malformed"),
        ("[1, 2]", "malformed"),
        ('"text"', "malformed"),
        ('{"type": "mystery", "sessionID": "ses_x"}', "unrecognized"),
        ('{"type": "text"}', "unrecognized"),
        ('{"type": "text", "part": {"type": "tool"}}', "unrecognized"),
        ('{"type": "error", "error": "boom"}', "unrecognized"),
        ('{"type": "tool_use", "part": {"type": "tool", "id": "p", "state": {}}}', "malformed"),
    ],
)
def test_malformed_and_unknown_lines_are_kept_raw(text: str, reason: str) -> None:
    parsed = OpencodeRunParser().feed(text)
    raws = [p for p in parsed if isinstance(p.payload, RawPayload)]
    assert [(p.payload.reason, p.raw) for p in raws] == [(reason, text)]  # type: ignore[union-attr]


def test_blank_lines_carry_nothing() -> None:
    assert OpencodeRunParser().feed("   ") == []


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_chunking_of_a_transcript_gives_the_same_events(data: st.DataObject) -> None:
    kit.check_any_chunking(data, ALL_TRANSCRIPTS, feed_all)


json_values = kit.any_json()
fuzzy_parts = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["p1", "p2"]) | json_values,
        "type": st.sampled_from(["text", "tool", "step-finish", "step-start", "reasoning"])
        | json_values,
        "text": json_values,
        "time": st.fixed_dictionaries({}, optional={"end": json_values}) | json_values,
        "tool": json_values,
        "callID": st.sampled_from(["c1", "c2"]) | json_values,
        "state": st.fixed_dictionaries(
            {},
            optional={
                "status": st.sampled_from(["pending", "running", "completed", "error"])
                | json_values,
                "input": json_values,
                "output": json_values,
                "error": json_values,
            },
        )
        | json_values,
        "reason": st.sampled_from(["stop", "tool-calls", "length"]) | json_values,
        "tokens": st.dictionaries(
            st.sampled_from(["input", "output", "reasoning", "cache"]), json_values
        )
        | json_values,
        "cost": json_values,
    },
)
fuzzy_events = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["step_start", "text", "reasoning", "tool_use", "step_finish", "error"]
        )
        | json_values
    },
    optional={
        "sessionID": st.sampled_from(["ses_a", ""]) | json_values,
        "part": fuzzy_parts | json_values,
        "error": st.fixed_dictionaries(
            {},
            optional={
                "name": json_values,
                "data": st.dictionaries(
                    st.sampled_from(["message", "statusCode", "isRetryable"]), json_values
                )
                | json_values,
            },
        )
        | json_values,
    },
)


@settings(max_examples=200, deadline=None)
@given(lines=kit.garbage_lines(fuzzy_events))
def test_garbage_never_crashes_and_every_line_is_kept(lines: list[str]) -> None:
    parser = OpencodeRunParser()
    results = 0
    for text in lines:
        one_line = text.replace("\n", " ").replace("\r", " ")
        parsed = parser.feed(one_line)
        own = [p for p in parsed if p.raw is not None]
        assert bool(own) == bool(one_line.strip())
        assert all(p.raw == one_line for p in own)
        for p in parsed:
            if p.raw is None:
                assert isinstance(p.payload, InitPayload | ResultPayload)
        results += sum(isinstance(p.payload, ResultPayload) for p in parsed)
    assert results <= 1


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(st.text(max_size=60), min_size=1, max_size=8))
def test_text_that_is_not_json_objects_becomes_raw_events(lines: list[str]) -> None:
    parser = OpencodeRunParser()
    for text in lines:
        one_line = text.replace("\n", " ").replace("\r", " ")
        try:
            is_object = isinstance(json.loads(one_line), dict)
        except ValueError:
            is_object = False
        if not is_object:
            assert all(isinstance(p.payload, RawPayload) for p in parser.feed(one_line))


# --- the invocation ------------------------------------------------------------------------

HOME = PurePosixPath("/home/agent/run-1")


def request(**fields: object) -> AgentRequest:
    fields.setdefault("provider", "opencode-run")
    return AgentRequest(prompt=str(fields.pop("prompt", "do it")), **fields)


def spec(**config: object) -> OpencodeRunSpec:
    return OpencodeRunSpec(
        OpencodeRunOptions(config=OpencodeConfig(**config), workdir="/work")  # type: ignore[arg-type]
    )


def test_invocation_is_one_headless_json_turn_with_the_generated_config() -> None:
    s = spec(binary="/opt/opencode", base_url="http://models:8080", model="m1")
    inv = s.invocation(request(prompt="-looks like an option"), home=HOME)
    assert inv.argv == ("/opt/opencode", "run", "--format", "json", "--", "-looks like an option")
    assert inv.cwd == "/work"
    assert [(step.signum, step.grace_s) for step in inv.interrupt] == [
        (signal.SIGTERM, 5.0),
        (signal.SIGKILL, 2.0),
    ]
    env = inv.env
    assert env["HOME"] == str(HOME)
    assert env["XDG_CONFIG_HOME"] == f"{HOME}/.config"
    assert env["XDG_DATA_HOME"] == f"{HOME}/.local/share"
    for switch in ("AUTOUPDATE", "MODELS_FETCH", "LSP_DOWNLOAD", "SHARE", "PROJECT_CONFIG"):
        assert env[f"OPENCODE_DISABLE_{switch}"] == "1"
    assert "OPENCODE_SERVER_PASSWORD" not in env
    document = json.loads(inv.files[CONFIG_FILE])
    assert document["model"] == "codeyard/m1"
    provider = document["provider"]["codeyard"]
    assert provider["options"]["baseURL"] == "http://models:8080/v1"
    assert provider["options"]["apiKey"] == f"{{env:{API_KEY_ENV}}}"
    assert inv.files[RULES_FILE] == "", "no instructions: an empty rules file"
    assert inv.secrets == ()
    parser = s.new_parser(request())
    [init, _] = parser.feed(step_finish("p", "tool-calls"))
    assert init.payload == InitPayload(session_id=SESSION, model="codeyard/m1", cwd="/work")


def test_resume_instructions_secrets_and_home_are_honoured() -> None:
    s = spec(api_key="sk-real")
    inv = s.invocation(
        request(
            session_id="-ses_1",
            instructions="Be brief.",
            system_prompt_append="Use tabs.",
            env={"HOME": "/elsewhere", "MY_TOKEN": "t0k3n", "FOO": "bar"},
            workdir="/repo",
        ),
        home=HOME,
    )
    assert inv.argv[-3:] == ("--session=-ses_1", "--", "do it")
    assert inv.files[RULES_FILE] == "Be brief.\n\nUse tabs.\n"
    assert inv.env["HOME"] == str(HOME)
    assert inv.env["FOO"] == "bar"
    assert inv.env[API_KEY_ENV] == "sk-real"
    assert set(inv.secrets) == {"sk-real", "t0k3n"}
    assert inv.cwd == "/repo"


def test_check_refuses_what_opencode_run_cannot_do() -> None:
    s = OpencodeRunSpec()
    assert s.name == "opencode-run"
    assert s.capabilities().resume
    assert not s.capabilities().max_turns
    with pytest.raises(UnsupportedProvider):
        s.check(request(provider="opencode"))
    with pytest.raises(InvalidRequest):
        s.check(request(allowed_commands=("pytest",)))
    with pytest.raises(InvalidInput):
        s.check(request(session_id="  "))
    s.check(request())


# --- the run loop over a replayed transcript -----------------------------------------------


def fake_opencode(tmp_path: Path, name: str, exit_code: int) -> Path:
    """A stand-in ``opencode`` printing a recorded transcript, then exiting ``exit_code``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    fake = tmp_path / "opencode"
    fake.write_text(f"#!/bin/sh\ncat '{TRANSCRIPTS / name}'\nexit {exit_code}\n")
    fake.chmod(0o755)
    return fake


async def replay(tmp_path: Path, name: str, exit_code: int) -> list[AgentEvent]:
    """The run loop over a stand-in ``opencode`` printing a recorded transcript."""
    fake = fake_opencode(tmp_path, name, exit_code)
    agent = local_agent(
        OpencodeRunSpec(OpencodeRunOptions(config=OpencodeConfig(binary=str(fake)))),
        tmp_path / "home",
    )
    events: list[AgentEvent] = []
    async with contextlib.aclosing(
        agent.execute(request(workdir=str(tmp_path), timeout_s=30, idle_timeout_s=30))
    ) as stream:
        async for event in stream:
            events.append(event)
    assert [e.seq for e in events] == list(range(len(events)))
    assert [e.payload.type for e in events].count("result") == 1
    return events


@pytest.mark.anyio
async def test_a_clean_exit_after_the_final_step_is_one_success(tmp_path: Path) -> None:
    events = await replay(tmp_path, "run1.stream.jsonl", 0)
    final = events[-1].payload
    assert isinstance(final, ResultPayload)
    result = final.result
    assert result.status is ResultStatus.SUCCESS, result
    assert (result.exit_code, result.provider) == (0, "opencode-run")
    assert result.session_id == "ses_dfd61ed81ffeZwFkIHIe7XAtoN"
    assert result.usage == TokenUsage(input_tokens=100, output_tokens=40)
    assert all(e.provider == "opencode-run" for e in events)


@pytest.mark.anyio
async def test_an_error_run_and_a_cut_run_end_in_error(tmp_path: Path) -> None:
    failed = (await replay(tmp_path / "a", "run6-force-error.stream.jsonl", 1))[-1].payload
    assert isinstance(failed, ResultPayload)
    assert failed.result.status is ResultStatus.ERROR
    assert failed.result.exit_code == 1
    assert failed.result.error == "mock: forced error (HTTP 400)"
    cut = (await replay(tmp_path / "b", "run4-sigterm.stream.jsonl", 0))[-1].payload
    assert isinstance(cut, ResultPayload)
    assert cut.result.status is ResultStatus.ERROR
    assert cut.result.terminal_reason == "no_result"
    assert cut.result.session_id == "ses_dfd6070fdffesocVC4YQ1YoovM"
