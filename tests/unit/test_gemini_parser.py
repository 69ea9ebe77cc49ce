"""GeminiParser over every recorded ``gemini --output-format stream-json`` transcript, plus
properties; and the invocation GeminiSpec builds (argv, env, generated settings.json)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeyard.adapters.cli.types import Parsed
from codeyard.adapters.gemini import GeminiOptions, GeminiParser, GeminiSpec
from codeyard.adapters.gemini.supervise import MARKER_ENV, supervised
from codeyard.domain.agent import AgentRequest, ResultStatus, TokenUsage
from codeyard.domain.errors import InvalidRequest, UnsupportedProvider
from codeyard.domain.events import (
    ErrorPayload,
    InitPayload,
    MessagePayload,
    RawPayload,
    ResultPayload,
    ToolResultPayload,
    ToolUsePayload,
)
from tests.unit import parser_support as kit
from tests.unit.parser_support import the_result, types

#: Copies of the real gemini CLI output recorded in shared/agent-transcripts (gemini/*.stream.jsonl,
#: and docker/gemini.stream.jsonl as docker-run1), kept verbatim so the tests are hermetic.
TRANSCRIPTS = kit.transcript_dir("gemini")
ALL_TRANSCRIPTS = sorted(TRANSCRIPTS.glob("*.stream.jsonl"))
_read = functools.partial(kit.read_transcript, TRANSCRIPTS)


def feed_all(lines: list[str], parser: GeminiParser | None = None) -> list[Parsed]:
    return kit.feed_each(parser or GeminiParser(), lines)


def full_messages(parsed: list[Parsed]) -> list[MessagePayload]:
    return [
        p.payload
        for p in parsed
        if isinstance(p.payload, MessagePayload)
        and not p.payload.delta
        and p.payload.role == "assistant"
    ]


# --- every transcript ----------------------------------------------------------------------


def test_the_recorded_transcripts_are_all_there() -> None:
    names = {p.name for p in ALL_TRANSCRIPTS}
    assert {
        "run1.stream.jsonl",
        "run6-force-error.stream.jsonl",
        "docker-run1.stream.jsonl",
    } <= names
    assert len(names) >= 9


@pytest.mark.parametrize("path", ALL_TRANSCRIPTS, ids=lambda p: p.name)
def test_every_transcript_is_understood_line_by_line(path: Path) -> None:
    lines = path.read_text().splitlines()
    parser = GeminiParser()
    results = 0
    deltas: dict[str | None, str] = {}
    assembled: dict[str | None, str] = {}
    for line in lines:
        parsed = parser.feed(line)
        assert parsed, f"{path.name}: a line gave nothing: {line}"
        for item in parsed:
            payload = item.payload
            assert not isinstance(payload, RawPayload), f"{path.name}: {line}"
            results += isinstance(payload, ResultPayload)
            if isinstance(payload, MessagePayload) and payload.role == "assistant":
                if payload.delta:
                    assert item.raw == line
                    deltas[payload.message_id] = deltas.get(payload.message_id, "") + (payload.text)
                else:
                    # Assembled by the parser from the fragments: no line of its own.
                    assert item.raw is None
                    assembled[payload.message_id] = payload.text
            else:
                assert item.raw == line
    assert parser.session_id == json.loads(lines[0])["session_id"]
    # Every finished message is exactly its fragments, joined.
    assert assembled == {k: v for k, v in deltas.items() if k in assembled}
    # Runs interrupted while the CLI relaunched itself went on to finish (the signal
    # went to the parent, which ignores it): only the NO_RELAUNCH ones stop.
    interrupted = "norelaunch" in path.name
    assert results == (0 if interrupted else 1), path.name


def test_a_tool_call_then_an_answer() -> None:
    for name in ("run1.stream.jsonl", "docker-run1.stream.jsonl"):
        parsed = feed_all(_read(name))
        head = types(parsed)[:7]
        assert head == [
            *("init", "message", "message", "message"),
            *("tool_use", "tool_result", "message"),
        ]
        init = parsed[0].payload
        assert isinstance(init, InitPayload)
        assert init.model == "gemini-2.5-pro"
        user = parsed[1].payload
        assert isinstance(user, MessagePayload)
        assert (user.role, user.text) == ("user", "create hello.txt")
        first = full_messages(parsed)[0]
        assert first.text == "I'll create the file."
        use, outcome = parsed[4].payload, parsed[5].payload
        assert isinstance(use, ToolUsePayload)
        assert isinstance(outcome, ToolResultPayload)
        assert use.name == "run_shell_command"
        assert use.input == {"command": "echo hello > hello.txt"}
        assert outcome.tool_use_id == use.tool_use_id
        assert not outcome.is_error
        assert types(parsed)[-3:] == ["message", "usage", "result"]
        result = the_result(parsed).result
        assert result.status is ResultStatus.SUCCESS
        assert result.provider == "gemini"
        assert result.session_id == init.session_id
        assert (
            result.text == "Done: I created hello.txt in the working directory. (history items: 3)"
        )
        assert full_messages(parsed)[-1].text == result.text
        assert result.usage == TokenUsage(input_tokens=100, output_tokens=40)
        assert result.turns == 2
        assert result.duration_s > 0


def test_resume_turn() -> None:
    parsed = feed_all(_read("run2-resume.stream.jsonl"))
    result = the_result(parsed).result
    assert result.ok
    assert result.session_id == "cfdfcc78-1a01-4a1a-b3ec-32a250044256"
    assert result.text == "Second turn answer without tools (history items: 5)"
    assert result.turns == 1


def test_an_interrupted_stream_has_its_fragments_but_no_result() -> None:
    parsed = feed_all(_read("run5-sigint-norelaunch.stream.jsonl"))
    assert "result" not in types(parsed)
    assert full_messages(parsed) == [], "the message never finished"
    assert sum(isinstance(p.payload, MessagePayload) and p.payload.delta for p in parsed) == 5


def test_a_model_error_becomes_an_error_result() -> None:
    parsed = feed_all(_read("run6-force-error.stream.jsonl"))
    result = the_result(parsed).result
    assert result.status is ResultStatus.ERROR
    assert result.error is not None
    assert "mock: forced error" in result.error
    assert result.terminal_reason == "api_error_400"
    assert result.text == ""


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ('[API Error: {"error":{"code":500,"message":"INTERNAL"}}]', "api_error_500"),
        ("[API Error: RESOURCE_EXHAUSTED]\nPlease wait and try again later.", "api_error"),
        ("[API Error: {not json}]", "api_error"),
        ("something else", "unknown"),
    ],
)
def test_api_errors_name_their_http_status(message: str, reason: str) -> None:
    line = json.dumps(
        {"type": "result", "status": "error", "error": {"type": "unknown", "message": message}}
    )
    result = the_result(GeminiParser().feed(line)).result
    assert result.terminal_reason == reason
    assert result.error == message


def test_failed_tool_and_warning_events() -> None:
    parsed = feed_all(
        [
            '{"type":"init","session_id":"s1","model":"m"}',
            '{"type":"tool_use","tool_name":"read_file","tool_id":"t1","parameters":{"p":"x"}}',
            '{"type":"tool_result","tool_id":"t1","status":"error",'
            '"error":{"type":"not_found","message":"no such file"}}',
            '{"type":"error","severity":"warning","message":"loop detected"}',
            '{"type":"message","role":"assistant","content":"whole answer"}',
            '{"type":"result","status":"error","error":{"type":"FatalTurnLimitedError",'
            '"message":"Reached max session turns"}}',
        ]
    )
    failed = parsed[2].payload
    assert isinstance(failed, ToolResultPayload)
    assert failed.is_error
    assert failed.output == "no such file"
    warning = parsed[3].payload
    assert isinstance(warning, ErrorPayload)
    assert (warning.code, warning.message) == ("warning", "loop detected")
    assert [m.text for m in full_messages(parsed)] == ["whole answer"]
    result = the_result(parsed).result
    assert result.status is ResultStatus.ERROR
    assert result.terminal_reason == "FatalTurnLimitedError"
    assert result.text == "whole answer"
    assert "usage" not in types(parsed), "no stats, no usage event"


def test_usage_uses_the_uncached_input() -> None:
    parsed = GeminiParser().feed(
        '{"type":"result","status":"success","stats":{"input_tokens":1000,"cached":600,'
        '"input":400,"output_tokens":7,"duration_ms":1500}}'
    )
    result = the_result(parsed).result
    assert result.usage == TokenUsage(input_tokens=400, output_tokens=7, cache_read_tokens=600)
    assert result.duration_s == 1.5


@pytest.mark.parametrize(
    "line",
    [
        "Loaded cached credentials.",
        "42",
        '{"type":"init"}',
        '{"type":"message","role":"assistant","content":5}',
        '{"type":"message","role":"robot","content":"hi"}',
        '{"type":"tool_use","tool_name":"x"}',
        '{"type":"tool_result","status":"success"}',
        '{"type":"brand_new"}',
    ],
)
def test_malformed_and_unknown_lines_are_kept_raw(line: str) -> None:
    parsed = GeminiParser().feed(line)
    assert [type(p.payload) for p in parsed] == [RawPayload]
    assert parsed[0].raw == line


def test_only_the_first_result_is_the_result() -> None:
    parser = GeminiParser()
    assert types(parser.feed('{"type":"result","status":"success"}')) == ["result"]
    assert types(parser.feed('{"type":"result","status":"error"}')) == ["raw"]


# --- properties ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_chunking_of_a_transcript_gives_the_same_events(data: st.DataObject) -> None:
    kit.check_any_chunking(data, ALL_TRANSCRIPTS, feed_all)


json_values = kit.any_json()
fuzzy_events = st.fixed_dictionaries(
    {"type": st.sampled_from(["init", "message", "tool_use", "tool_result", "error", "result"])},
    optional={
        "session_id": json_values,
        "role": st.sampled_from(["user", "assistant", "x"]) | json_values,
        "content": json_values,
        "delta": json_values,
        "tool_id": json_values,
        "tool_name": json_values,
        "parameters": json_values,
        "status": st.sampled_from(["success", "error"]) | json_values,
        "stats": st.dictionaries(
            st.sampled_from(["input_tokens", "cached", "input", "output_tokens", "duration_ms"]),
            json_values,
        ),
        "error": json_values,
    },
)


@settings(max_examples=120, deadline=None)
@given(lines=kit.garbage_lines(fuzzy_events))
def test_garbage_never_crashes_and_every_line_is_kept(lines: list[str]) -> None:
    parser = GeminiParser()
    results = 0
    for text in lines:
        line = text.replace("\n", " ")
        parsed = parser.feed(line)
        own = [p for p in parsed if p.raw is not None]
        assert bool(own) == bool(line.strip())
        assert all(p.raw == line for p in own)
        # Only an assembled message comes without a line.
        for p in parsed:
            if p.raw is None:
                assert isinstance(p.payload, MessagePayload)
                assert not p.payload.delta
        results += sum(isinstance(p.payload, ResultPayload) for p in parsed)
    assert results <= 1


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(st.text(max_size=60), min_size=1, max_size=8))
def test_text_that_is_not_json_objects_becomes_raw_events(lines: list[str]) -> None:
    kit.check_non_objects_become_raw(GeminiParser(), lines)


# --- the invocation ------------------------------------------------------------------------

HOME = PurePosixPath("/home/agent/run-1")


def request(**fields: object) -> AgentRequest:
    return AgentRequest(provider="gemini", prompt=str(fields.pop("prompt", "do it")), **fields)


def test_invocation_is_headless_stream_json_with_generated_settings() -> None:
    spec = GeminiSpec(
        GeminiOptions(
            binary="/opt/gemini", base_url="http://127.0.0.1:1", api_key="k-1", supervise=False
        )
    )
    inv = spec.invocation(request(model="m1", workdir="/work/repo", max_turns=4), home=HOME)
    assert inv.argv[0] == "/opt/gemini"
    assert MARKER_ENV not in inv.env
    assert "--output-format=stream-json" in inv.argv
    assert "--yolo" in inv.argv
    assert "--prompt=do it" in inv.argv
    assert not any(a.startswith("--resume") for a in inv.argv)
    assert inv.cwd == "/work/repo"
    assert inv.env["HOME"] == str(HOME)
    assert inv.env["GEMINI_API_KEY"] == "k-1"
    assert inv.env["GOOGLE_GEMINI_BASE_URL"] == "http://127.0.0.1:1"
    assert inv.env["GEMINI_CLI_NO_RELAUNCH"] == "true"
    assert inv.env["TMPDIR"] == str(HOME / ".gemini" / "codeyard-tmp")
    assert PurePosixPath(".gemini/codeyard-tmp/README") in inv.files
    assert inv.secrets == ("k-1",)
    settings_json = json.loads(inv.files[PurePosixPath(".gemini/settings.json")])
    assert settings_json["security"]["auth"]["selectedType"] == "gemini-api-key"
    assert settings_json["model"] == {"name": "m1", "maxSessionTurns": 4}
    assert inv.files[PurePosixPath(".gemini/GEMINI.md")] == ""


def test_the_cli_runs_under_the_supervisor_with_a_fresh_marker() -> None:
    spec = GeminiSpec(GeminiOptions(binary="/opt/gemini", max_attempts=1))
    first, second = (spec.invocation(request(), home=HOME) for _ in range(2))
    assert first.argv[:2] == ("/bin/sh", "-c")
    assert first.argv[4:6] == ("/opt/gemini", "--output-format=stream-json")
    assert first.env[MARKER_ENV] != second.env[MARKER_ENV]
    settings_json = json.loads(first.files[PurePosixPath(".gemini/settings.json")])
    assert settings_json["general"]["maxAttempts"] == 1
    with pytest.raises(InvalidRequest):
        GeminiSpec(GeminiOptions(max_attempts=0))


def test_the_supervisor_kills_what_the_cli_detached_and_keeps_its_status() -> None:
    """A stand-in "CLI" (sh) detaches a child into its own session, like Gemini's shell
    tool, and exits 3: the supervisor must return 3 and leave no such child alive."""
    marker = uuid.uuid4().hex
    detach = "import os, time; os.setsid(); time.sleep(30)"
    cli = ["/bin/sh", "-c", f"{sys.executable} -c '{detach}' & echo $!; exit 3"]
    env = {"PATH": os.environ["PATH"], MARKER_ENV: marker}
    began = time.monotonic()
    done = subprocess.run(
        supervised(cli), env=env, capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 3, done.stderr
    child = int(done.stdout.strip())
    assert time.monotonic() - began < 10
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child, os.WNOHANG)  # not ours: only in case this process adopted it
    state = Path(f"/proc/{child}/stat")
    assert not state.exists() or state.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_resume_and_instructions_and_reserved_env() -> None:
    inv = GeminiSpec().invocation(
        request(
            prompt="--help me",
            session_id="abc",
            instructions="Be brief.",
            env={"HOME": "/x", "GEMINI_API_KEY": "k-env", "GEMINI_CLI_NO_RELAUNCH": "false"},
        ),
        home=HOME,
    )
    assert "--prompt=--help me" in inv.argv
    assert "--resume=abc" in inv.argv
    assert inv.env["HOME"] == str(HOME)
    assert inv.env["GEMINI_CLI_NO_RELAUNCH"] == "true"
    assert inv.env["GEMINI_API_KEY"] == "k-env", "the request may carry the key"
    assert "GOOGLE_GEMINI_BASE_URL" not in inv.env
    assert inv.files[PurePosixPath(".gemini/GEMINI.md")] == "Be brief.\n"
    assert "model" not in json.loads(inv.files[PurePosixPath(".gemini/settings.json")])


def test_check_refuses_what_gemini_cannot_do() -> None:
    spec = GeminiSpec(GeminiOptions(api_key="k"))
    spec.check(request(max_turns=2))
    GeminiSpec().check(request(env={"GEMINI_API_KEY": "k"}))
    with pytest.raises(InvalidRequest):
        GeminiSpec().check(request())
    with pytest.raises(UnsupportedProvider):
        spec.check(AgentRequest(provider="codex", prompt="x"))
    with pytest.raises(InvalidRequest):
        spec.check(request(allowed_commands=("ls",)))
    assert spec.capabilities().resume
    assert spec.capabilities().streaming_deltas
