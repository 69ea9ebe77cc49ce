"""CodexParser over every recorded ``codex exec --json`` transcript, plus properties; and the
invocation CodexSpec builds (argv, env, generated config.toml)."""

from __future__ import annotations

import functools
import json
import tomllib
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeyard.adapters.cli.types import Parsed
from codeyard.adapters.codex import CodexOptions, CodexParser, CodexSpec
from codeyard.adapters.codex.spec import API_KEY_ENV, render_config, toml_string
from codeyard.domain.agent import AgentRequest, ResultStatus, TokenUsage
from codeyard.domain.errors import InvalidRequest, UnsupportedProvider
from codeyard.domain.events import (
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

#: Copies of the real codex CLI output recorded in shared/agent-transcripts (codex/*.stream.jsonl,
#: and docker/codex.stream.jsonl as docker-run1), kept verbatim so the tests are hermetic.
TRANSCRIPTS = kit.transcript_dir("codex")
ALL_TRANSCRIPTS = sorted(TRANSCRIPTS.glob("*.stream.jsonl"))
_read = functools.partial(kit.read_transcript, TRANSCRIPTS)


def feed_all(lines: list[str], parser: CodexParser | None = None) -> list[Parsed]:
    return kit.feed_each(parser or CodexParser(), lines)


# --- every transcript ----------------------------------------------------------------------


def test_the_recorded_transcripts_are_all_there() -> None:
    names = {p.name for p in ALL_TRANSCRIPTS}
    assert {
        "run1.stream.jsonl",
        "run6-force-error.stream.jsonl",
        "docker-run1.stream.jsonl",
    } <= names
    assert len(names) >= 10


@pytest.mark.parametrize("path", ALL_TRANSCRIPTS, ids=lambda p: p.name)
def test_every_transcript_is_understood_line_by_line(path: Path) -> None:
    lines = path.read_text().splitlines()
    parser = CodexParser()
    first = json.loads(lines[0])
    results = 0
    for line in lines:
        parsed = parser.feed(line)
        assert parsed, f"{path.name}: a line gave nothing: {line}"
        for item in parsed:
            assert item.raw == line, "every payload keeps its line verbatim"
            assert not isinstance(item.payload, RawPayload), f"{path.name}: {line}"
            results += isinstance(item.payload, ResultPayload)
    assert parser.session_id == first["thread_id"]
    # Interrupted runs end without a final event: the run loop synthesizes one.
    interrupted = "sig" in path.name
    assert results == (0 if interrupted else 1), path.name


def test_a_tool_call_then_an_answer() -> None:
    for name in ("run1.stream.jsonl", "docker-run1.stream.jsonl"):
        parsed = feed_all(_read(name))
        assert types(parsed) == [
            "init",
            "error",  # the fallback-metadata warning item
            "lifecycle",
            "message",
            "tool_use",
            "tool_result",
            "message",
            "usage",
            "result",
        ]
        init = parsed[0].payload
        assert isinstance(init, InitPayload)
        assert init.session_id == json.loads(_read(name)[0])["thread_id"]
        use, outcome = parsed[4].payload, parsed[5].payload
        assert isinstance(use, ToolUsePayload)
        assert isinstance(outcome, ToolResultPayload)
        assert use.name == "shell"
        assert use.input == {"command": "/bin/bash -lc 'echo hello > hello.txt'"}
        assert outcome.tool_use_id == use.tool_use_id == "item_2"
        assert not outcome.is_error
        result = the_result(parsed).result
        assert result.status is ResultStatus.SUCCESS
        assert result.provider == "codex"
        assert result.session_id == init.session_id
        assert result.text.startswith("Done: I created hello.txt")
        assert result.usage == TokenUsage(input_tokens=100, output_tokens=40)
        assert result.turns == 2
        assert result.terminal_reason == "turn.completed"


def test_resume_turn_answers_without_tools() -> None:
    lines = _read("run2-resume.stream.jsonl")
    thread_id = json.loads(lines[0])["thread_id"]
    parser = CodexParser(resumed=thread_id)
    parsed = feed_all(lines, parser)
    assert "tool_use" not in types(parsed)
    result = the_result(parsed).result
    assert result.ok
    assert result.session_id == thread_id
    assert result.text.startswith("Second turn answer")
    assert result.turns == 1
    assert result.usage.input_tokens == 150
    assert not any(
        isinstance(p.payload, ErrorPayload) and p.payload.code == "resume_not_found" for p in parsed
    )


def test_a_resume_codex_could_not_find_is_reported() -> None:
    parser = CodexParser(resumed="0f3c2a9e-session")
    parsed = parser.feed('{"type":"thread.started","thread_id":"01a2-new"}')
    assert types(parsed) == ["init", "error"]
    error = parsed[1].payload
    assert isinstance(error, ErrorPayload)
    assert error.code == "resume_not_found"
    assert "0f3c2a9e-session" in error.message


def test_an_interrupted_tool_stays_open_and_there_is_no_result() -> None:
    parsed = feed_all(_read("run3-sigint-during-tool.stream.jsonl"))
    assert types(parsed)[-1] == "tool_use"
    assert "result" not in types(parsed)


def test_a_model_error_becomes_an_error_event_and_an_error_result() -> None:
    parsed = feed_all(_read("run6-force-error.stream.jsonl"))
    assert types(parsed)[-2:] == ["error", "result"]
    error = parsed[-2].payload
    assert isinstance(error, ErrorPayload)
    assert error.message == "mock: forced error"
    assert error.code == "mock_forced_error"
    result = the_result(parsed).result
    assert result.status is ResultStatus.ERROR
    assert result.error == "mock: forced error"
    assert result.terminal_reason == "turn.failed"


# --- item types the transcripts do not show (shapes of codex-rs exec_events.rs) ------------


def _item(phase: str, **item: object) -> str:
    return json.dumps({"type": f"item.{phase}", "item": item})


def test_failed_command_reasoning_file_change_mcp_and_todo_items() -> None:
    parser = CodexParser()
    parsed = feed_all(
        [
            _item("completed", id="r1", type="reasoning", text="thinking..."),
            _item("started", id="c1", type="command_execution", command="false", status="x"),
            _item(
                "completed",
                id="c1",
                type="command_execution",
                command="false",
                aggregated_output="boom\n",
                exit_code=1,
                status="failed",
            ),
            _item(
                "completed",
                id="f1",
                type="file_change",
                changes=[{"path": "a.py", "kind": "add"}],
                status="completed",
            ),
            _item(
                "started", id="m1", type="mcp_tool_call", server="s", tool="t", arguments={"a": 1}
            ),
            _item(
                "completed",
                id="m1",
                type="mcp_tool_call",
                server="s",
                tool="t",
                result={"content": [{"type": "text", "text": "ok"}]},
                status="completed",
            ),
            _item("updated", id="t1", type="todo_list", items=[{"text": "x", "completed": True}]),
            json.dumps({"type": "item.plan.delta", "item_id": "p1", "delta": "step 1"}),
        ],
        parser,
    )
    payloads = [p.payload for p in parsed]
    assert isinstance(payloads[0], MessagePayload)
    assert payloads[0].kind == "thinking"
    failed = payloads[2]
    assert isinstance(failed, ToolResultPayload)
    assert failed.is_error
    assert failed.output == "boom\n"
    use, change = payloads[3], payloads[4]
    assert isinstance(use, ToolUsePayload)
    assert use.name == "file_change"
    assert isinstance(change, ToolResultPayload)
    assert change.output == "add a.py"
    assert not change.is_error
    mcp = payloads[5]
    assert isinstance(mcp, ToolUsePayload)
    assert (mcp.name, mcp.input) == ("mcp__s__t", {"a": 1})
    mcp_result = payloads[6]
    assert isinstance(mcp_result, ToolResultPayload)
    assert mcp_result.output == "ok"
    todo = payloads[7]
    assert isinstance(todo, LifecyclePayload)
    assert todo.detail == {"items": [{"text": "x", "completed": True}]}
    delta = payloads[8]
    assert isinstance(delta, MessagePayload)
    assert delta.delta
    assert delta.message_id == "p1"


def test_usage_buckets_are_disjoint() -> None:
    parsed = CodexParser().feed(
        '{"type":"turn.completed","usage":{"input_tokens":1000,"cached_input_tokens":800,'
        '"output_tokens":5}}'
    )
    usage = parsed[0].payload
    assert isinstance(usage, UsagePayload)
    assert usage.usage == TokenUsage(input_tokens=200, output_tokens=5, cache_read_tokens=800)
    assert usage.usage.total == 1005


def test_only_the_first_terminal_event_is_the_result() -> None:
    parser = CodexParser()
    first = parser.feed('{"type":"turn.completed","usage":{}}')
    second = parser.feed('{"type":"turn.failed","error":{"message":"late"}}')
    assert types(first) == ["usage", "result"]
    assert types(second) == ["raw"]


@pytest.mark.parametrize(
    "line",
    [
        "not json at all",
        "[1, 2]",
        '{"type":"thread.started"}',
        '{"type":"thread.started","thread_id":7}',
        '{"type":"item.completed","item":"nope"}',
        '{"type":"item.started","item":{"type":"command_execution"}}',
        '{"type":"something.new","x":1}',
        '{"no_type":true}',
    ],
)
def test_malformed_and_unknown_lines_are_kept_raw(line: str) -> None:
    parsed = CodexParser().feed(line)
    assert [type(p.payload) for p in parsed] == [RawPayload]
    assert parsed[0].raw == line


def test_blank_lines_carry_nothing() -> None:
    assert CodexParser().feed("   ") == []


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_chunking_of_a_transcript_gives_the_same_events(data: st.DataObject) -> None:
    kit.check_any_chunking(data, ALL_TRANSCRIPTS, feed_all)


json_values = kit.any_json(floats=False)
event_types = st.sampled_from(
    [
        "thread.started",
        "turn.started",
        "turn.completed",
        "turn.failed",
        "item.started",
        "item.updated",
        "item.completed",
        "item.plan.delta",
        "request_user_input",
        "error",
        "other",
    ]
)
item_types = st.sampled_from(
    [
        *("agent_message", "reasoning", "command_execution", "file_change", "mcp_tool_call"),
        *("web_search", "collab_tool_call", "todo_list", "error", "plan", "new_kind"),
    ]
)
fuzzy_items = st.fixed_dictionaries(
    {"type": item_types}, optional={"id": json_values, "text": json_values}
).flatmap(lambda base: st.dictionaries(st.text(max_size=10), json_values).map(base.__or__))
fuzzy_events = st.fixed_dictionaries(
    {"type": event_types},
    optional={
        "item": fuzzy_items | json_values,
        "thread_id": json_values,
        "usage": json_values,
        "error": json_values,
        "message": json_values,
    },
)


@settings(max_examples=120, deadline=None)
@given(lines=kit.garbage_lines(fuzzy_events))
def test_garbage_never_crashes_and_every_line_is_kept(lines: list[str]) -> None:
    parser = CodexParser()
    results = 0
    for text in lines:
        line = text.replace("\n", " ")
        parsed = parser.feed(line)
        assert bool(parsed) == bool(line.strip())
        assert all(p.raw == line for p in parsed)
        results += sum(isinstance(p.payload, ResultPayload) for p in parsed)
    assert results <= 1


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(st.text(max_size=60), min_size=1, max_size=8))
def test_text_that_is_not_json_objects_becomes_raw_events(lines: list[str]) -> None:
    kit.check_non_objects_become_raw(CodexParser(), lines)


# --- the invocation ------------------------------------------------------------------------

HOME = PurePosixPath("/home/agent/run-1")


def request(**fields: object) -> AgentRequest:
    return AgentRequest(provider="codex", prompt=str(fields.pop("prompt", "do it")), **fields)


def test_invocation_runs_exec_json_with_a_generated_config() -> None:
    spec = CodexSpec(
        CodexOptions(binary="/opt/codex", base_url="http://127.0.0.1:1/v1", api_key="sk-1")
    )
    inv = spec.invocation(request(model="m1", workdir="/work/repo"), home=HOME)
    assert inv.argv[:3] == ("/opt/codex", "exec", "--json")
    assert "--skip-git-repo-check" in inv.argv
    assert inv.argv[-2:] == ("--", "do it")
    assert inv.cwd == "/work/repo"
    assert inv.env["HOME"] == str(HOME)
    assert inv.env["CODEX_HOME"] == str(HOME / ".codex")
    assert inv.env[API_KEY_ENV] == "sk-1"
    assert "PATH" in inv.env
    assert inv.secrets == ("sk-1",)
    config = tomllib.loads(inv.files[PurePosixPath(".codex/config.toml")])
    assert config["model"] == "m1"
    assert config["approval_policy"] == "never"
    assert config["sandbox_mode"] == "danger-full-access"
    provider = config["model_providers"][config["model_provider"]]
    assert provider["base_url"] == "http://127.0.0.1:1/v1"
    assert provider["env_key"] == API_KEY_ENV
    assert provider["wire_api"] == "responses"
    assert inv.files[PurePosixPath(".codex/AGENTS.md")] == ""


def test_resume_prompt_options_and_instructions() -> None:
    spec = CodexSpec(CodexOptions(max_retries=0))
    inv = spec.invocation(
        request(
            prompt="-not an option",
            session_id="thread-1",
            instructions="Be brief.",
            system_prompt_append="Use tabs.",
            env={"HOME": "/elsewhere", "OPENAI_API_KEY": "sk-env", "EXTRA": "1"},
        ),
        home=HOME,
    )
    assert inv.argv[-4:] == ("resume", "thread-1", "--", "-not an option")
    assert inv.env["HOME"] == str(HOME), "a request cannot move the private HOME"
    assert inv.env["EXTRA"] == "1"
    assert inv.env[API_KEY_ENV] == "sk-env"
    assert inv.files[PurePosixPath(".codex/AGENTS.md")] == "Be brief.\n\nUse tabs.\n"
    config = tomllib.loads(inv.files[PurePosixPath(".codex/config.toml")])
    provider = config["model_providers"][config["model_provider"]]
    assert provider["request_max_retries"] == provider["stream_max_retries"] == 0
    assert "model" not in config


def test_check_refuses_what_codex_cannot_do() -> None:
    spec = CodexSpec(CodexOptions(api_key="k"))
    spec.check(request())
    CodexSpec().check(request(env={"OPENAI_API_KEY": "k"}))
    with pytest.raises(InvalidRequest):
        CodexSpec().check(request())
    with pytest.raises(UnsupportedProvider):
        spec.check(AgentRequest(provider="gemini", prompt="x"))
    with pytest.raises(InvalidRequest):
        spec.check(request(max_turns=3))
    with pytest.raises(InvalidRequest):
        spec.check(request(allowed_commands=("ls",)))
    assert spec.capabilities().resume
    assert not spec.capabilities().max_turns


@settings(max_examples=200, deadline=None)
@given(value=st.text())
def test_toml_strings_round_trip(value: str) -> None:
    assert tomllib.loads(f"v = {toml_string(value)}")["v"] == value


@given(model=st.text(min_size=1), url=st.text())
def test_rendered_config_is_valid_toml(model: str, url: str) -> None:
    config = tomllib.loads(render_config(base_url=url, model=model, max_retries=2, features=()))
    assert config["model"] == model
    assert config["model_providers"]["codeyard"]["base_url"] == url
