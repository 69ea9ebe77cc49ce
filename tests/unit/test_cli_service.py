"""The service commands without a service: event rendering, argument errors, and an
unreachable service (exit 1 with a fix hint). Round trips are in
tests/integration/test_cli_service.py."""

from __future__ import annotations

import os

import pytest
import typer
from typer.testing import CliRunner

from codeyard.app.cli import app
from codeyard.app.cli_calls import explain
from codeyard.app.cli_render import EventRenderer, event_text, shorten
from codeyard.domain.agent import AgentResult, ResultStatus, TokenUsage
from codeyard.domain.errors import InvalidRequest, QuotaExceeded, ReplyTimeout
from codeyard.domain.events import (
    AgentEvent,
    ErrorPayload,
    EventPayload,
    InitPayload,
    LifecyclePayload,
    MessagePayload,
    RawPayload,
    ResultPayload,
    StderrPayload,
    StdoutPayload,
    ToolResultPayload,
    ToolUsePayload,
    UsagePayload,
)
from tests.services import free_port

runner = CliRunner()
WIDE = {"COLUMNS": "240"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CODEYARD_"):
            monkeypatch.delenv(key)


def ev(payload: EventPayload, raw: str | None = None) -> AgentEvent:
    return AgentEvent(worker_id="w-1", run_id="r-1", seq=0, payload=payload, raw=raw)


def render(*payloads: EventPayload) -> list[tuple[str, str]]:
    renderer = EventRenderer()
    lines = [line for p in payloads for line in renderer.feed(ev(p))] + renderer.flush()
    return [(line.kind, line.text) for line in lines]


# --- rendering --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        (InitPayload(session_id="s-1", model="opus"), "session s-1, model opus"),
        (InitPayload(), "new session"),
        (MessagePayload(text="Hello\n  world"), "Hello world"),
        (MessagePayload(text="hmm", kind="thinking"), "[assistant thinking] hmm"),
        (ToolUsePayload(tool_use_id="t", name="Bash", input={"command": "ls -la"}), "Bash ls -la"),
        (ToolUsePayload(tool_use_id="t", name="Edit", input={"old": 1}), 'Edit {"old":1}'),
        (ToolUsePayload(tool_use_id="t", name="TodoRead"), "TodoRead"),
        (ToolResultPayload(tool_use_id="t", output="a\nb"), "ok: a b"),
        (ToolResultPayload(tool_use_id="t", is_error=True), "error"),
        (
            UsagePayload(usage=TokenUsage(input_tokens=10, output_tokens=3), cost_usd=0.01),
            "10 in, 3 out, $0.0100",
        ),
        (ErrorPayload(message="overloaded", code="529"), "overloaded (529)"),
        (StdoutPayload(line="out line"), "out line"),
        (StderrPayload(line="err line"), "err line"),
        (LifecyclePayload(state="ready"), "ready"),
        (
            LifecyclePayload(state="stopped", detail={"reason": "stop_requested", "at": "x"}),
            "stopped reason=stop_requested",
        ),
    ],
)
def test_each_event_type_renders_as_one_short_line(payload: EventPayload, text: str) -> None:
    assert render(payload) == [(payload.type, text)]


def test_results_show_status_cost_turns_and_text() -> None:
    ok = AgentResult(
        status=ResultStatus.SUCCESS, provider="claude", text="Done.", cost_usd=0.5, turns=2
    )
    failed = AgentResult(
        status=ResultStatus.ERROR, provider="claude", error="boom", terminal_reason="exit_1"
    )
    assert render(ResultPayload(result=ok)) == [("result", "success, $0.5000, 2 turns | Done.")]
    assert render(ResultPayload(result=failed)) == [("result", "error, cost n/a, exit_1: boom")]


def test_raw_events_show_their_reason_and_the_line() -> None:
    assert event_text(ev(RawPayload(), raw='{"odd": 1}')) == 'unrecognized: {"odd": 1}'


def test_heartbeats_are_not_shown() -> None:
    assert render(LifecyclePayload(state="heartbeat", detail={"at": "now"})) == []


def test_message_deltas_are_concatenated_per_message_and_replaced_by_the_full_text() -> None:
    lines = render(
        MessagePayload(text="Hel", delta=True, message_id="m1"),
        MessagePayload(text="lo", delta=True, message_id="m1"),
        MessagePayload(text="Hello!", message_id="m1"),
    )
    assert lines == [("message", "Hello!")]


def test_pending_deltas_are_shown_before_the_next_event_and_at_the_end() -> None:
    lines = render(
        MessagePayload(text="Let me ", delta=True, message_id="m1"),
        MessagePayload(text="look.", delta=True, message_id="m1"),
        ToolUsePayload(tool_use_id="t", name="Read", input={"file_path": "/a.py"}),
        MessagePayload(text="Fin", delta=True, message_id="m2"),
    )
    assert lines == [("message", "Let me look."), ("tool_use", "Read /a.py"), ("message", "Fin")]


def test_long_texts_are_shortened_with_an_ellipsis() -> None:
    assert shorten("x" * 500, 10) == "x" * 9 + "…"
    (_, text) = render(ToolUsePayload(tool_use_id="t", name="Bash", input={"command": "y" * 300}))[
        0
    ]
    assert len(text) == len("Bash ") + 80
    assert text.endswith("…")


def test_lines_start_with_the_local_time_and_the_kind() -> None:
    event = ev(StdoutPayload(line="hi"))
    (line,) = EventRenderer().feed(event)
    assert line.plain() == f"{event.ts.astimezone():%H:%M:%S}  stdout      hi"


# --- argument errors: exit 2 before connecting anywhere ---------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["send", "w-1", "  "], "must not be empty"),
        (["send", "w-1"], "Missing argument"),
        (["create", "--wait"], "--wait needs --prompt"),
        (["create", "--instructions-file", "/nonexistent/x.md"], "does not exist"),
        (["status", "bad id!"], "identifier must match"),
        (["rm", "ok", "bad/id"], "identifier must match"),
        (["rm"], "Missing argument"),
        (["logs", "w-1", "--tail", "0"], "--tail"),
        (["ls", "--service", "http://127.0.0.1:1"], "redis://"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], says: str) -> None:
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == 2, result.output
    assert says in result.output


def test_no_service_configured_exits_2_naming_the_variable() -> None:
    result = runner.invoke(app, ["ls"], env=WIDE)
    assert result.exit_code == 2, result.output
    assert "no codeyard service given" in result.stderr
    assert "CODEYARD_REDIS_URL" in result.stderr


# --- an unreachable service: exit 1 and how to fix it ------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "args",
    [
        ["ls"],
        ["status", "w-1"],
        ["logs", "w-1"],
        ["logs", "-f", "w-1"],
        ["send", "w-1", "hi"],
        ["rm", "w-1"],
        ["create"],
        ["attach", "w-1"],
    ],
)
def test_an_unreachable_service_exits_1_with_a_hint(args: list[str]) -> None:
    env = {**WIDE, "CODEYARD_REDIS_URL": f"redis://:secret@127.0.0.1:{free_port()}/0"}
    result = runner.invoke(app, args, env=env, input="")
    assert result.exit_code == 1, result.output
    assert "cannot reach the codeyard service at redis://:****@127.0.0.1" in result.stderr
    assert "fix: check --service / CODEYARD_REDIS_URL" in result.stderr
    assert "secret" not in result.output


@pytest.mark.parametrize(
    ("error", "code", "says"),
    [
        (ReplyTimeout("no reply", timeout_s=30.0), 1, "no worker manager answered on redis://h"),
        (QuotaExceeded("too many workers", limit=1), 1, "too many workers (limit=1)"),
        (InvalidRequest("bad spec"), 2, "invalid request: bad spec"),
        (TimeoutError(), 1, "timed out"),
    ],
)
def test_service_errors_become_a_message_and_an_exit_code(
    capsys: pytest.CaptureFixture[str], error: Exception, code: int, says: str
) -> None:
    with pytest.raises(typer.Exit) as exited:
        explain(error, "redis://h", None)
    assert exited.value.exit_code == code
    assert says in capsys.readouterr().err


def test_no_manager_answering_hints_at_codeyard_serve(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        explain(ReplyTimeout("no reply", timeout_s=30.0), "redis://h", None)
    assert "fix: start one with `codeyard serve`" in capsys.readouterr().err
