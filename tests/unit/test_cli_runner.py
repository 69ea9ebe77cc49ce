"""The pure parts of the run loop: RunStream (output -> stamped events), Tally and the
final result, Redactor, HOME files, and CliCodeAgent's checks before any process starts.
The loop against a real process is tests/integration/test_cli_runner_process.py."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import stat
import time
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeyard.adapters.cli import CliCodeAgent, LineParser, Parsed, Redactor, RunLimits
from codeyard.adapters.cli.home import write_home_files
from codeyard.adapters.cli.outcome import CANCEL_REQUESTED, IDLE_TIMEOUT, Tally
from codeyard.adapters.cli.pump import Inputs, Stream
from codeyard.adapters.cli.stream import RunStream
from codeyard.adapters.process import LocalProcessLauncher
from codeyard.domain.agent import AgentRequest, AgentResult, ResultStatus, TokenUsage
from codeyard.domain.errors import InvalidRequest, ResumeUnsupported, UnsupportedProvider
from codeyard.domain.events import AgentEvent, MessagePayload, UsagePayload
from tests.fixtures.fake_provider import PROVIDER, FakeParser, FakeSpec

SECRET = 'sk-"quoted"\\slash-ü'


def make_stream(
    *,
    secrets: tuple[str, ...] = (),
    limits: RunLimits | None = None,
    parser: LineParser | None = None,
) -> tuple[RunStream, AgentRequest]:
    spec = FakeSpec(secrets=secrets)
    request = AgentRequest(provider=PROVIDER, prompt="x", worker_id="w", task_id="t")
    invocation = spec.invocation(request, home=PurePosixPath("/home/x"))
    # Pure bookkeeping: a plain clock instead of the event loop's.
    stream = RunStream(
        PROVIDER,
        request,
        invocation,
        parser or FakeParser(),
        limits or RunLimits(),
        clock=time.monotonic,
    )
    return stream, request


def out(*chunks: bytes, stream: Stream = "stdout") -> Inputs:
    return Inputs(chunks=[(stream, chunk) for chunk in chunks])


def jl(**data: object) -> bytes:
    return json.dumps(data).encode() + b"\n"


# --- RunStream -----------------------------------------------------------------------------


def test_events_are_stamped_in_order_with_the_run_ids() -> None:
    stream, request = make_stream()
    blank = b"\n   \n"
    events = stream.take(
        out(jl(type="init", session_id="s") + blank + jl(type="message", text="hi"))
    )
    events += stream.take(Inputs(ended=["stdout", "stderr"]))
    events += stream.finish(None, None, 0, "s")
    assert [e.seq for e in events] == list(range(len(events)))
    assert [e.payload.type for e in events] == ["init", "message", "result"]
    assert events[0].raw == '{"type": "init", "session_id": "s"}'
    for event in events:
        assert (event.provider, event.run_id) == (PROVIDER, request.id)
        assert (event.worker_id, event.task_id) == ("w", "t")


def test_the_cli_result_is_held_back_and_later_stdout_ignored() -> None:
    stream, _ = make_stream()
    events = stream.take(out(jl(type="result", text="done"), jl(type="message", text="late")))
    assert events == []
    assert stream.cli_result is not None
    # stderr still flows after the result: it is output the user should see.
    assert [e.payload.type for e in stream.take(out(b"bye\n", stream="stderr"))] == ["stderr"]
    (final,) = stream.finish(None, None, 0, None)
    assert final.payload.type == "result"
    assert (final.payload.result.text, final.payload.result.exit_code) == ("done", 0)
    assert final.seq == 1


def test_an_unterminated_last_line_is_parsed_at_eof() -> None:
    stream, _ = make_stream()
    assert stream.take(out(b'{"type": "message", "text": "no newline"}')) == []
    (event,) = stream.take(Inputs(ended=["stdout"]))
    assert event.payload.type == "message"


def test_a_parser_that_raises_does_not_end_the_run() -> None:
    class Exploding(FakeParser):
        def feed(self, line: str) -> list[Parsed]:
            raise RuntimeError("bug")

    stream, _ = make_stream(parser=Exploding())
    (event,) = stream.take(out(b"anything\n"))
    assert event.payload.type == "error"
    assert (event.payload.code, event.raw) == ("parser_error", "anything")


def test_launcher_failures_become_error_events_and_reach_the_result() -> None:
    stream, _ = make_stream()
    (event,) = stream.take(Inputs(ended=["stdout"], errors=["stdout failed: OSError()"]))
    assert event.payload.type == "error"
    assert event.payload.code == "launcher_error"
    (final,) = stream.finish(None, None, 1, None)
    assert final.payload.type == "result"
    assert "stdout failed" in (final.payload.result.error or "")


def test_secrets_are_redacted_on_the_line_and_in_what_the_parser_builds() -> None:
    class Leaky(FakeParser):
        def feed(self, line: str) -> list[Parsed]:
            # A parser that adds a secret from elsewhere: the payload scrub catches it.
            return [*super().feed(line), Parsed(MessagePayload(text=f"env had {SECRET}"))]

    stream, _ = make_stream(secrets=(SECRET,), parser=Leaky())
    events = stream.take(out(jl(type="message", text=f"key={SECRET}"), f"{SECRET}\n".encode()))
    events += stream.take(out(f"stderr {SECRET}\n".encode(), stream="stderr"))
    events += stream.finish(None, None, 1, None)
    escaped = json.dumps(SECRET)[1:-1]
    for event in events:
        dumped = event.model_dump_json()
        assert SECRET not in dumped
        assert escaped not in dumped
        assert SECRET not in (event.raw or "")
    assert "[REDACTED]" in (events[0].raw or "")


def test_an_over_long_line_becomes_a_raw_event() -> None:
    stream, _ = make_stream(limits=RunLimits(max_line_bytes=8))
    (event,) = stream.take(out(b'{"type": "message"}\n'))
    assert event.payload.type == "raw"
    assert (event.payload.reason, event.raw) == ("line_too_long", '{"type":')


def test_stderr_lines_are_cut_and_capped() -> None:
    stream, _ = make_stream(limits=RunLimits(max_stderr_line_chars=5, max_stderr_events=1))
    events = stream.take(out(b"0123456789\nsecond\n\n", stream="stderr"))
    assert len(events) == 1
    assert events[0].payload.type == "stderr"
    assert events[0].payload.line == "01234... [5 more chars]"
    notice, final = stream.finish(None, None, 1, None)
    assert notice.payload.type == "lifecycle"
    assert notice.payload.detail == {"dropped_lines": 1, "cap": 1}
    assert final.payload.type == "result"
    assert "secon... [1 more chars]" in (final.payload.result.error or "")  # tail kept past the cap


stdout_streams = st.lists(
    st.sampled_from(
        [
            jl(type="init", session_id="s1"),
            jl(type="message", text="héllo €"),
            jl(type="usage", input=1, output=2),
            b"not json at all\n",
            b"\xff\xfe broken utf-8\n",
            b"[1, 2]\n",
            b"\n",
        ]
    ),
    max_size=12,
).map(b"".join)


def payloads(events: list[AgentEvent]) -> list[tuple[str, str | None]]:
    return [(e.payload.model_dump_json(), e.raw) for e in events]


@settings(max_examples=200)
@given(data=stdout_streams, cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_any_chunking_of_stdout_yields_the_same_events(data: bytes, cuts: list[int]) -> None:
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    whole, _ = make_stream()
    pieces, _ = make_stream()
    expected = whole.take(out(data)) + whole.take(Inputs(ended=["stdout"]))
    got = []
    for a, b in itertools.pairwise(bounds):
        got += pieces.take(out(data[a:b]))
    got += pieces.take(Inputs(ended=["stdout"]))
    assert payloads(got) == payloads(expected)
    assert [e.seq for e in got] == list(range(len(got)))


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=40).filter(lambda b: b"\n" not in b), max_size=10))
def test_garbage_never_crashes_and_every_line_is_kept(lines: list[bytes]) -> None:
    stream, _ = make_stream()
    events = stream.take(out(b"\n".join(lines) + b"\n"))
    kept = [line for line in lines if line.decode("utf-8", "replace").strip()]
    assert len(events) == len(kept)  # one event per non-blank line, none lost
    for event, line in zip(events, kept, strict=True):
        assert event.raw == line.decode("utf-8", errors="replace").removesuffix("\r")


# --- Tally and the final result ------------------------------------------------------------


def test_tally_keeps_the_last_assistant_text_from_full_messages_and_deltas() -> None:
    tally = Tally(provider=PROVIDER, stderr_tail_lines=3)
    tally.observe(MessagePayload(text="first"))
    assert tally.text == "first"
    tally.observe(MessagePayload(text="Hel", delta=True, message_id="m2"))
    tally.observe(MessagePayload(text="lo", delta=True, message_id="m2"))
    assert tally.text == "Hello"
    tally.observe(MessagePayload(text="Other", delta=True, message_id="m3"))
    assert tally.text == "Other"
    tally.observe(MessagePayload(text="thinking...", kind="thinking"))
    tally.observe(MessagePayload(text="user says", role="user"))
    assert tally.text == "Other"


def test_synthesized_results() -> None:
    tally = Tally(provider=PROVIDER, stderr_tail_lines=2)
    tally.observe(UsagePayload(usage=TokenUsage(input_tokens=3), cost_usd=0.25))
    tally.observe(UsagePayload(usage=TokenUsage(output_tokens=4), cost_usd=0.5))
    tally.observe(MessagePayload(text="so far"))
    for line in ("a", "b", "c"):
        tally.stderr_tail.append(line)
    common: dict[str, Any] = {"exit_code": 1, "session_id": "s", "duration_s": 2.0}
    error = tally.final(cli_result=None, stop=None, stopped_by=None, **common)
    assert (error.status, error.terminal_reason, error.text) == (
        ResultStatus.ERROR,
        "no_result",
        "so far",
    )
    assert error.error == "the CLI exited with code 1 without a result; stderr tail:\nb\nc"
    assert (error.usage.input_tokens, error.usage.output_tokens, error.cost_usd) == (3, 4, 0.75)
    idle = tally.final(cli_result=None, stop=IDLE_TIMEOUT, stopped_by="SIGTERM", **common)
    assert (idle.status, idle.terminal_reason) == (ResultStatus.TIMEOUT, "idle_timeout")
    assert idle.error == "no output within idle_timeout_s (stopped by SIGTERM)"
    # A result printed while being interrupted lends its facts; the status stays cancelled.
    printed = AgentResult(
        status=ResultStatus.ERROR, provider=PROVIDER, session_id="s2", text="aborted", turns=3
    )
    cancelled = tally.final(cli_result=printed, stop=CANCEL_REQUESTED, stopped_by=None, **common)
    assert cancelled.status is ResultStatus.CANCELLED
    assert (cancelled.session_id, cancelled.text, cancelled.turns) == ("s2", "aborted", 3)


# --- Redactor and HOME files ---------------------------------------------------------------


def test_redactor() -> None:
    redactor = Redactor(["sk-abc12", "sk-abc12def", ""])
    assert redactor.redact("x sk-abc12def y sk-abc12") == "x [REDACTED] y [REDACTED]"
    clean = {"a": ["no secret"]}
    assert redactor.scrub(clean) is clean
    assert redactor.scrub({"k": ("sk-abc12", 1, {"sk-abc12": None})}) == {
        "k": ("[REDACTED]", 1, {"[REDACTED]": None})
    }
    assert not Redactor([""]).active


def test_a_secret_too_short_to_tell_from_text_is_not_redacted() -> None:
    # An API key of "k" would otherwise turn every "k" of every line into [REDACTED].
    redactor = Redactor(["k", "short7!"])
    assert not redactor.active
    assert redactor.redact('{"kind": "ok"}') == '{"kind": "ok"}'


def test_home_files_are_private_and_stay_inside_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    target = home / ".cfg" / "settings.json"
    target.parent.mkdir(parents=True)
    target.write_text("old")
    os.chmod(target, 0o644)
    write_home_files(home, {PurePosixPath(".cfg/settings.json"): "new"})
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    for bad in ("/etc/passwd", "../escape", "a/../../b"):
        with pytest.raises(InvalidRequest):
            write_home_files(home, {PurePosixPath(bad): "x"})
    outside = tmp_path / "outside"
    (home / "link").symlink_to(outside)
    # A planted symlink is replaced by the renamed file, never written through.
    write_home_files(home, {PurePosixPath("link"): "x"})
    assert not outside.exists()
    assert not (home / "link").is_symlink()
    assert (home / "link").read_text() == "x"
    assert [p.name for p in home.iterdir() if p.name.endswith(".tmp")] == []


# --- CliCodeAgent: checks before anything starts -------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("spec", "fields", "error"),
    [
        (FakeSpec(), {"provider": "someone-else"}, UnsupportedProvider),
        (FakeSpec(resume=False), {"session_id": "abc"}, ResumeUnsupported),
    ],
)
async def test_requests_are_checked_before_any_event(
    tmp_path: Path, spec: FakeSpec, fields: dict[str, str], error: type[Exception]
) -> None:
    agent = CliCodeAgent(spec, LocalProcessLauncher(), tmp_path)
    request = AgentRequest(prompt="x", **{"provider": PROVIDER, **fields})
    events: list[AgentEvent] = []

    async def drain() -> None:
        async with contextlib.aclosing(agent.execute(request)) as stream:
            async for event in stream:
                events.append(event)

    with pytest.raises(error):
        await drain()
    assert events == []
    assert agent.running == frozenset()
    assert not (tmp_path / ".fake").exists()


@pytest.mark.anyio
async def test_cancel_of_an_unknown_id_is_a_noop(tmp_path: Path) -> None:
    agent = CliCodeAgent(FakeSpec(), LocalProcessLauncher(), tmp_path)
    await agent.cancel("nothing-running")
    assert agent.running == frozenset()
    assert agent.capabilities() == FakeSpec().capabilities()
