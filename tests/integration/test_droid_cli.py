"""The REAL Factory Droid CLI (``droid exec --output-format stream-json``) through DroidSpec
and the shared run loop, against the scripted model server, as a local subprocess.

Air-gapped with a BYOK custom model over each wire API Droid speaks. Every run is checked
to end with exactly one result event; processes are counted by an environment marker (see
``droid_support``): Droid's process group and every tool process must be gone afterwards.
"""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath

import anyio
import anyio.abc
import pytest

from codeyard.adapters.cli.home import write_home_files
from codeyard.adapters.droid import DroidWireApi
from codeyard.domain.agent import ResultStatus
from codeyard.domain.errors import ResumeUnsupported
from codeyard.domain.events import (
    AgentEvent,
    ErrorPayload,
    InitPayload,
    LifecyclePayload,
    MessagePayload,
    ToolResultPayload,
    ToolUsePayload,
)
from codeyard.testing.model_server import HttpError, Scenario, Stall, Text, ToolCall
from codeyard.testing.model_server.tools import shell, write_file
from tests.integration.cli_support import final_result, processes_with, proxy_recorder, wait_for
from tests.integration.droid_support import (
    API_KEY,
    WIRE_PATHS,
    assert_no_secret,
    need_droid,
    run_harness,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _droid_installed() -> None:
    need_droid()


@pytest.mark.parametrize("wire", list(DroidWireApi), ids=lambda w: w.name.lower())
async def test_a_tool_call_writes_the_file_then_the_answer_ends_the_run(
    tmp_path: Path, wire: DroidWireApi
) -> None:
    target = tmp_path / "work" / "hello.txt"
    content = "hello from droid — ünïcødé ✓\n"
    scenario = Scenario(
        turns=[
            [Text("I'll write the file."), write_file("droid", str(target), content)],
            [Text("Done: wrote hello.txt.")],
        ]
    )
    async with run_harness(scenario, tmp_path, wire) as h:
        request = h.request("create hello.txt")
        events = await h.run(request)
        result = final_result(events, request)
        assert result.status is ResultStatus.SUCCESS, result.error
        assert result.text == "Done: wrote hello.txt."
        assert target.read_text(encoding="utf-8") == content
        assert isinstance(events[0].payload, LifecyclePayload)
        assert events[0].payload.state == "agent_started"
        init = events[1].payload
        assert isinstance(init, InitPayload)
        assert init.model == "custom:codeyard-0"
        assert result.session_id == init.session_id is not None
        [use] = [e.payload for e in events if isinstance(e.payload, ToolUsePayload)]
        assert (use.name, use.input.get("file_path")) == ("Create", str(target))
        [done] = [e.payload for e in events if isinstance(e.payload, ToolResultPayload)]
        assert (done.tool_use_id, done.is_error) == (use.tool_use_id, False)
        assert result.exit_code == 0
        assert result.usage.output_tokens > 0
        requests = h.server.model_requests()
        assert {r.path for r in requests} == {WIRE_PATHS[wire]}
        assert len(requests) == 2
        sent = requests[0].headers.get("x-api-key") or requests[0].headers.get("authorization")
        assert sent is not None
        assert API_KEY in sent, "the key reached the model through ${VAR} expansion"
        assert_no_secret(events)
        await h.assert_nothing_left()


async def test_resume_in_a_second_turn_is_refused_before_anything_starts(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[Text("First answer.")]])
    async with run_harness(scenario, tmp_path) as h:
        first = h.request("remember the number 7")
        result = final_result(await h.run(first), first)
        assert result.status is ResultStatus.SUCCESS
        assert result.session_id
        served = len(h.server.requests)
        h.seen.clear()

        second = h.request("which number?", session_id=result.session_id)
        events: list[AgentEvent] = []
        with pytest.raises(ResumeUnsupported):
            events = await h.run(second)
        assert events == []
        assert h.seen == {}, "no process was started"
        assert len(h.server.requests) == served
        assert not h.spec.capabilities().resume


async def test_the_cli_itself_cannot_resume_offline(tmp_path: Path) -> None:
    """Why ``check`` refuses: the real CLI, asked to continue a real session while
    air-gapped, exits 1 without printing a line (it fetches the session from Factory)."""
    scenario = Scenario(turns=[[Text("First answer.")]])
    async with run_harness(scenario, tmp_path) as h:
        first = h.request("remember the number 7")
        session_id = final_result(await h.run(first), first).session_id
        home = tmp_path / "home"
        invocation = h.spec.invocation(h.request("which number?"), home=PurePosixPath(home))
        write_home_files(home, invocation.files)
        argv = list(invocation.argv)
        argv.insert(argv.index("--"), f"--session-id={session_id}")
        done = await anyio.to_thread.run_sync(
            lambda: subprocess.run(
                argv,
                env=dict(invocation.env),
                cwd=h.workdir,
                capture_output=True,
                timeout=60,
                check=False,
            )
        )
        assert (done.returncode, done.stdout) == (1, b"")
        assert len(h.server.model_requests()) == 1, "only the first turn reached the model"


async def test_cancel_mid_stream(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[Text("Working on it, slowly", chunk_size=4), Stall()]])
    async with run_harness(scenario, tmp_path) as h:
        request = h.request("stream then hang")

        async def on_event(event: AgentEvent) -> None:
            if isinstance(event.payload, MessagePayload) and event.payload.role == "user":
                await wait_for(lambda: bool(h.server.model_requests()))
                await h.agent.cancel(request.id)

        started = anyio.current_time()
        result = final_result(await h.run(request, on_event), request)
        assert result.status is ResultStatus.CANCELLED
        assert result.terminal_reason == "cancel_requested"
        assert anyio.current_time() - started < 15
        await h.assert_nothing_left()


async def test_cancel_mid_tool_leaves_no_process(tmp_path: Path) -> None:
    late = tmp_path / "work" / "late.txt"
    scenario = Scenario(
        turns=[[shell("droid", f"sleep 300; echo late > {late}")], [Text("unreachable")]]
    )
    async with run_harness(scenario, tmp_path) as h:
        request = h.request("run the slow command")

        async def on_event(event: AgentEvent) -> None:
            if isinstance(event.payload, ToolUsePayload):
                # The tool is running (in a session of its own) before we cancel.
                await wait_for(lambda: any("sleep 300" in p.cmdline for p in h.census()))
                await h.agent.cancel(request.id)

        result = final_result(await h.run(request, on_event), request)
        assert result.status is ResultStatus.CANCELLED
        assert result.exit_code == 128 + 9, "SIGKILL stopped droid (it outlives INT/TERM)"
        tools = [p for p in h.seen.values() if "sleep 300" in p.cmdline]
        assert tools, "the census saw the tool"
        droid_pgid = next(
            p.pgid for p in h.seen.values() if p.cmdline.startswith(h.spec.options.binary)
        )
        assert all(p.pgid != droid_pgid for p in tools), "Droid detaches its tools"
        # Killed with Droid, not 2 s later by its tool supervisor: the final kill takes the
        # descendants found while Droid still lived.
        await h.assert_nothing_left()
        assert not late.exists()
        assert len(h.server.model_requests()) == 1, "no model call after the cancel"


@pytest.mark.parametrize("status", [400, 401])
async def test_a_model_http_error_ends_in_an_error_result(tmp_path: Path, status: int) -> None:
    scenario = Scenario(turns=[[HttpError(status, message=f"scripted {status}")]])
    async with run_harness(scenario, tmp_path) as h:
        request = h.request("fail please")
        started = anyio.current_time()
        events = await h.run(request)
        result = final_result(events, request)
        assert result.status is ResultStatus.ERROR
        assert str(status) in (result.error or "")
        assert result.exit_code == 1
        errors = [e.payload for e in events if isinstance(e.payload, ErrorPayload)]
        assert [e.code for e in errors] == ["agent_loop", "cli"]
        assert anyio.current_time() - started < 15, "a 4xx is not retried"
        assert_no_secret(events)
        await h.assert_nothing_left()


async def test_an_overloaded_model_is_retried_until_the_idle_timeout(tmp_path: Path) -> None:
    """Droid retries 529 itself for minutes, silently: the run loop's idle timeout ends it."""
    scenario = Scenario(turns=[[HttpError(529)]])
    async with run_harness(scenario, tmp_path) as h:
        request = h.request("try hard", idle_timeout_s=9.0, timeout_s=60.0)
        result = final_result(await h.run(request), request)
        assert result.status is ResultStatus.TIMEOUT
        assert result.terminal_reason == "idle_timeout"
        assert len(h.server.model_requests()) >= 2, "Droid retried the 529"
        await h.assert_nothing_left()


async def test_a_stalled_model_hits_the_idle_timeout(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[Stall()]])
    async with run_harness(scenario, tmp_path) as h:
        request = h.request("hang", idle_timeout_s=3.0, timeout_s=30.0)
        started = anyio.current_time()
        result = final_result(await h.run(request), request)
        assert result.status is ResultStatus.TIMEOUT
        assert result.terminal_reason == "idle_timeout"
        assert result.session_id, "the session id learned from init is kept"
        assert anyio.current_time() - started < 12
        await h.assert_nothing_left()


async def test_instructions_and_the_appended_prompt_reach_the_model(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[Text("Bonjour.")]])
    async with run_harness(scenario, tmp_path, DroidWireApi.CHAT_COMPLETIONS) as h:
        request = h.request(
            "say hello",
            instructions="Always answer in French (marker 41c9).",
            system_prompt_append="Sign with 'codeyard' (marker 77ab).",
        )
        assert final_result(await h.run(request), request).status is ResultStatus.SUCCESS
        [body] = h.model_bodies()
        assert "marker 41c9" in body
        assert "marker 77ab" in body
        # The next turn without instructions must not inherit them from the kept HOME.
        again = h.request("say hello again")
        assert final_result(await h.run(again), again).status is ResultStatus.SUCCESS
        assert "marker 41c9" not in h.model_bodies()[-1]


async def test_allowed_commands_run_and_others_end_the_turn(tmp_path: Path) -> None:
    def risky(command: str) -> ToolCall:
        # Under ``--auto`` Droid's Execute tool also wants the model's risk estimate.
        return ToolCall(
            "Execute",
            {
                "command": command,
                "summary": "Run the requested command",
                "riskLevel": "high",
                "riskLevelReason": "scripted",
            },
        )

    allowed, refused = tmp_path / "work" / "allowed.txt", tmp_path / "work" / "refused.txt"
    scenario = Scenario(
        turns=[[risky(f"touch {allowed}")], [Text("Done.")]],
        is_side=lambda _dialect, body: False,
    )
    async with run_harness(scenario, tmp_path) as h:
        ok = h.request("touch it", allowed_commands=("touch",))
        assert final_result(await h.run(ok), ok).status is ResultStatus.SUCCESS
        assert allowed.exists()

    scenario = Scenario(turns=[[risky(f"touch {refused}")], [Text("Done.")]])
    async with run_harness(scenario, tmp_path) as h:
        denied = h.request("touch it", allowed_commands=("git status",))
        result = final_result(await h.run(denied), denied)
        assert result.status is ResultStatus.ERROR
        assert "insufficient permission" in (result.error or "")
        assert not refused.exists()
        assert processes_with(h.marker) == []


@pytest.mark.parametrize("airgapped", [True, False], ids=["airgapped", "control"])
async def test_no_call_home(tmp_path: Path, airgapped: bool) -> None:
    """Without ``FACTORY_AIRGAP_ENABLED`` Droid dials api.factory.ai and its telemetry on
    every run; air-gapped it talks to the model only. The control run proves the recorder
    sees the calls."""
    async with proxy_recorder() as (proxy, seen):
        env = {"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "NO_PROXY": "127.0.0.1,localhost"}
        async with run_harness(Scenario.text("hi"), tmp_path, airgapped=airgapped) as h:
            request = h.request("hello", env=env)
            result = final_result(await h.run(request), request)
        await anyio.sleep(0.2)  # a connection accepted as the run ended is still recorded
    assert result.ok, result
    if airgapped:
        assert seen == []
    else:
        assert any("factory.ai" in line for line in seen), seen
