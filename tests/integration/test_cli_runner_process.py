"""The run loop driving a real process: the fake CLI (tests/fixtures/fake_cli.py) through
the real LocalProcessLauncher. Every scenario checks the CodeAgent contract (seq from 0,
exactly one result and it is last) and that nothing of the process group is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import docker
import docker.errors
import pytest

from codeyard.adapters.cli import CliCodeAgent, InterruptStep, RunLimits
from codeyard.adapters.docker import DockerExecLauncher
from codeyard.adapters.process import LocalProcessHandle, LocalProcessLauncher
from codeyard.domain.agent import AgentRequest, AgentResult, ResultStatus
from codeyard.domain.errors import ExecutableNotFound
from codeyard.domain.events import AgentEvent, LifecyclePayload
from tests.contract.test_code_agent import assert_well_formed_run
from tests.fixtures.fake_provider import PROVIDER, FakeSpec, line

pytestmark = pytest.mark.anyio

DEADLINE_S = 30.0
FAST = RunLimits(result_exit_grace_s=1.0, exit_drain_s=0.5, close_deadline_s=5.0)
SHORT_INTERRUPT = (
    InterruptStep(signal.SIGINT, 0.6),
    InterruptStep(signal.SIGTERM, 0.6),
    InterruptStep(signal.SIGKILL, 0.6),
)
SECRET = 'sk-test-"s3cr3t"-\\-é'


class RecordingLauncher:
    """The real local launcher, remembering its handles so tests can check the groups."""

    def __init__(self) -> None:
        self._inner = LocalProcessLauncher(adopt_orphans=True)
        self.handles: list[LocalProcessHandle] = []

    async def start(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None = None
    ) -> LocalProcessHandle:
        handle = await self._inner.start(argv, env=env, cwd=cwd)
        self.handles.append(handle)
        return handle


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class Harness:
    def __init__(self, home: Path, spec: FakeSpec, limits: RunLimits = FAST) -> None:
        self.launcher = RecordingLauncher()
        self.agent = CliCodeAgent(spec, self.launcher, home, limits=limits)

    def request(self, **fields: Any) -> AgentRequest:
        fields.setdefault("timeout_s", 20.0)
        fields.setdefault("idle_timeout_s", 10.0)
        return AgentRequest(provider=PROVIDER, prompt="do it", **fields)

    async def run(
        self, request: AgentRequest, *, cancel_after: int | None = None
    ) -> list[AgentEvent]:
        """The run's events; the first is checked here for every test: the
        ``agent_started`` lifecycle event with the CLI's pid, before any output."""
        events: list[AgentEvent] = []
        with anyio.fail_after(DEADLINE_S):
            async with contextlib.aclosing(self.agent.execute(request)) as stream:
                async for event in stream:
                    events.append(event)
                    if cancel_after is not None and len(events) == cancel_after + 1:
                        # + 1: counted in output events, after agent_started.
                        await self.agent.cancel(request.id)
                        await self.agent.cancel(request.id)  # idempotent
        started = events[0]
        assert isinstance(started.payload, LifecyclePayload), started
        assert started.payload.state == "agent_started"
        assert isinstance(started.payload.detail["pid"], int)
        assert started.seq == 0
        return events

    def assert_nothing_left(self) -> None:
        assert self.launcher.handles, "a process was started"
        for handle in self.launcher.handles:
            assert not group_exists(handle.pgid), f"process group {handle.pgid} survived"
        assert self.agent.running == frozenset()


def result_of(events: list[AgentEvent], request: AgentRequest) -> AgentResult:
    final = assert_well_formed_run(events, request)
    assert final.payload.type == "result"
    return final.payload.result


def types(events: list[AgentEvent]) -> list[str]:
    """The payload types after ``agent_started`` (checked by :meth:`Harness.run`)."""
    return [e.payload.type for e in events[1:]]


# --- natural ends -------------------------------------------------------------------------


async def test_a_successful_turn(tmp_path: Path) -> None:
    spec = FakeSpec(
        steps=[
            line(type="init", session_id="sess-1"),
            line(type="message", text="working"),
            line(type="usage", input=10, output=5, cost=0.5),
            line(type="usage", input=1, output=2),
            line(type="result", text="all done"),
        ]
    )
    h = Harness(tmp_path, spec)
    request = h.request(worker_id="w1", task_id="t1")
    events = await h.run(request)
    result = result_of(events, request)
    assert types(events) == ["init", "message", "usage", "usage", "result"]
    assert result.status is ResultStatus.SUCCESS
    assert (result.text, result.session_id, result.exit_code) == ("all done", "sess-1", 0)
    # The CLI's result had no usage: it is completed from the UsagePayloads.
    assert (result.usage.input_tokens, result.usage.output_tokens) == (11, 7)
    assert result.cost_usd == 0.5
    assert result.duration_s > 0
    h.assert_nothing_left()


async def test_nonzero_exit_without_result_is_an_error_with_code_and_stderr_tail(
    tmp_path: Path,
) -> None:
    spec = FakeSpec(
        steps=[
            line(type="init", session_id="sess-2"),
            line(type="message", text="partial answer"),
            {"err": "fatal: model exploded"},
            {"exit": 3},
        ]
    )
    h = Harness(tmp_path, spec)
    request = h.request()
    events = await h.run(request)
    result = result_of(events, request)
    assert result.status is ResultStatus.ERROR
    assert result.exit_code == 3
    assert result.terminal_reason == "no_result"
    assert result.error is not None
    assert "code 3" in result.error
    assert "fatal: model exploded" in result.error
    assert (result.session_id, result.text) == ("sess-2", "partial answer")
    assert "stderr" in types(events)
    h.assert_nothing_left()


async def test_clean_exit_without_result_is_an_error_too(tmp_path: Path) -> None:
    h = Harness(tmp_path, FakeSpec(steps=[line(type="message", text="hi")]))
    request = h.request()
    result = result_of(await h.run(request), request)
    assert (result.status, result.exit_code) == (ResultStatus.ERROR, 0)
    h.assert_nothing_left()


async def test_a_leaked_child_is_killed_after_the_result(tmp_path: Path) -> None:
    spec = FakeSpec(steps=[{"spawn": ["sleep", "300"]}, line(type="result", text="ok")])
    h = Harness(tmp_path, spec)
    request = h.request()
    result = result_of(await h.run(request), request)
    assert result.status is ResultStatus.SUCCESS
    h.assert_nothing_left()


async def test_a_child_holding_stdout_does_not_keep_the_run_alive(tmp_path: Path) -> None:
    spec = FakeSpec(steps=[{"spawn_detached": ["sleep", "300"]}, {"exit": 0}])
    h = Harness(tmp_path, spec)
    request = h.request(idle_timeout_s=15.0)
    started = anyio.current_time()
    result = result_of(await h.run(request), request)
    # The leader exited: the pipes get exit_drain_s, not the idle timeout.
    assert anyio.current_time() - started < 5.0
    assert (result.status, result.exit_code) == (ResultStatus.ERROR, 0)
    h.assert_nothing_left()


async def test_a_cli_that_does_not_exit_after_its_result_is_killed(tmp_path: Path) -> None:
    spec = FakeSpec(steps=[line(type="result", text="ok"), {"sleep": 60}])
    h = Harness(tmp_path, spec)
    request = h.request()
    started = anyio.current_time()
    result = result_of(await h.run(request), request)
    assert FAST.result_exit_grace_s <= anyio.current_time() - started < 5.0
    assert result.status is ResultStatus.SUCCESS
    assert result.exit_code == 128 + signal.SIGKILL
    h.assert_nothing_left()


# --- watchdogs ----------------------------------------------------------------------------


async def test_idle_timeout(tmp_path: Path) -> None:
    spec = FakeSpec(
        steps=[line(type="init", session_id="s"), line(type="message", text="thinking"),
               {"sleep": 60}],
        interrupt=SHORT_INTERRUPT,
    )  # fmt: skip
    h = Harness(tmp_path, spec)
    request = h.request(idle_timeout_s=0.5)
    started = anyio.current_time()
    result = result_of(await h.run(request), request)
    assert anyio.current_time() - started < 5.0
    assert result.status is ResultStatus.TIMEOUT
    assert result.terminal_reason == "idle_timeout"
    assert result.error is not None
    assert "idle_timeout_s" in result.error
    assert (result.session_id, result.text) == ("s", "thinking")
    h.assert_nothing_left()


async def test_output_keeps_the_idle_timer_alive_but_the_hard_deadline_wins(
    tmp_path: Path,
) -> None:
    chatter = [step for i in range(200) for step in (line(type="message", text=f"{i}"),
                                                      {"sleep": 0.1})]  # fmt: skip
    h = Harness(tmp_path, FakeSpec(steps=chatter, interrupt=SHORT_INTERRUPT))
    request = h.request(timeout_s=1.5, idle_timeout_s=0.5)
    result = result_of(await h.run(request), request)
    assert result.status is ResultStatus.TIMEOUT
    assert result.terminal_reason == "timeout"
    assert 1.5 <= result.duration_s < 6.0
    h.assert_nothing_left()


# --- cancel and interrupt escalation ------------------------------------------------------


async def test_cancel_with_a_clean_interrupt(tmp_path: Path) -> None:
    # Like Claude Code: SIGINT makes the CLI print an aborted result and exit.
    aborted = json.dumps({"type": "result", "status": "error", "text": "aborted"})
    spec = FakeSpec(
        steps=[
            {"on": "INT", "out": aborted, "exit": 130},
            line(type="init", session_id="sess-c"),
            {"sleep": 60},
        ],
        interrupt=(InterruptStep(signal.SIGINT, 5.0), InterruptStep(signal.SIGKILL, 1.0)),
    )
    h = Harness(tmp_path, spec)
    request = h.request()
    started = anyio.current_time()
    events = await h.run(request, cancel_after=1)
    result = result_of(events, request)
    assert anyio.current_time() - started < 4.0  # SIGINT sufficed: no waiting for graces
    assert result.status is ResultStatus.CANCELLED
    assert result.terminal_reason == "cancel_requested"
    assert result.error is not None
    assert "SIGINT" in result.error
    assert (result.session_id, result.text, result.exit_code) == ("sess-c", "aborted", 130)
    h.assert_nothing_left()


async def test_cancel_escalates_int_term_kill_with_each_grace(tmp_path: Path) -> None:
    spec = FakeSpec(
        steps=[{"trap": "INT"}, {"trap": "TERM"}, line(type="init"), {"sleep": 60}],
        interrupt=SHORT_INTERRUPT,
    )
    h = Harness(tmp_path, spec)
    request = h.request()
    events = await h.run(request, cancel_after=1)
    result = result_of(events, request)
    stderr = [(e.payload.line, e.ts) for e in events if e.payload.type == "stderr"]
    assert [text for text, _ in stderr] == ["got SIGINT", "got SIGTERM"]
    gap = (stderr[1][1] - stderr[0][1]).total_seconds()
    assert 0.5 <= gap < 2.0, f"SIGTERM came {gap:.2f}s after SIGINT; grace is 0.6s"
    assert result.status is ResultStatus.CANCELLED
    assert result.exit_code == 128 + signal.SIGKILL
    assert result.error is not None
    assert "SIGKILL" in result.error
    h.assert_nothing_left()


async def test_a_cli_ignoring_int_and_term_still_dies_by_sigkill(tmp_path: Path) -> None:
    spec = FakeSpec(
        steps=[{"ignore": ["INT", "TERM"]}, {"spawn": ["sleep", "300"]}, line(type="init"),
               {"sleep": 60}],
        interrupt=SHORT_INTERRUPT[:2],  # no SIGKILL step: the final kill is the runner's own
    )  # fmt: skip
    h = Harness(tmp_path, spec)
    request = h.request(idle_timeout_s=0.5)
    started = anyio.current_time()
    result = result_of(await h.run(request), request)
    assert 1.2 <= anyio.current_time() - started < 6.0
    assert result.status is ResultStatus.TIMEOUT
    assert result.exit_code == 128 + signal.SIGKILL
    assert result.error is not None
    assert "SIGKILL" in result.error
    h.assert_nothing_left()


# --- the consumer stops -------------------------------------------------------------------


async def test_consumer_cancellation_kills_the_group_and_propagates(tmp_path: Path) -> None:
    spec = FakeSpec(steps=[{"spawn": ["sleep", "300"]}, line(type="init"), {"sleep": 60}])
    h = Harness(tmp_path, spec)
    request = h.request()
    events: list[AgentEvent] = []
    with anyio.fail_after(DEADLINE_S):
        with anyio.move_on_after(1.0) as scope:
            async with contextlib.aclosing(h.agent.execute(request)) as stream:
                async for event in stream:
                    events.append(event)
        assert scope.cancelled_caught  # not swallowed into a synthesized result
    assert events
    assert not any(e.is_terminal for e in events)
    h.assert_nothing_left()


async def test_closing_the_iterator_mid_run_kills_the_group(tmp_path: Path) -> None:
    spec = FakeSpec(steps=[{"spawn": ["sleep", "300"]}, line(type="init"), {"sleep": 60}])
    h = Harness(tmp_path, spec)
    with anyio.fail_after(DEADLINE_S):
        async with contextlib.aclosing(h.agent.execute(h.request())) as stream:
            async for _ in stream:
                break
    h.assert_nothing_left()


# --- what goes into events ----------------------------------------------------------------


async def test_secrets_never_appear_in_any_event(tmp_path: Path) -> None:
    spec = FakeSpec(
        steps=[
            line(type="init", session_id="s"),
            line(type="message", text=f"the key is {SECRET}"),  # JSON-escaped on the line
            {"out": f"plain text with {SECRET} inside"},  # not JSON: a raw event
            {"err": f"debug: using key {SECRET}"},
            {"exit": 1},
        ],
        secrets=(SECRET,),
    )
    h = Harness(tmp_path, spec)
    request = h.request()
    events = await h.run(request)
    result_of(events, request)
    escaped = json.dumps(SECRET)[1:-1]
    for event in events:
        dumped = event.model_dump_json()
        for form in (SECRET, escaped, json.dumps(escaped)[1:-1]):
            assert form not in dumped
            assert form not in repr(event)
    assert sum("[REDACTED]" in e.model_dump_json() for e in events) >= 3
    h.assert_nothing_left()


async def test_an_over_long_line_becomes_a_raw_event(tmp_path: Path) -> None:
    spec = FakeSpec(steps=[{"big": 5000}, line(type="result", text="ok")])
    h = Harness(tmp_path, spec, RunLimits(max_line_bytes=1024, result_exit_grace_s=1.0))
    request = h.request()
    events = await h.run(request)
    assert result_of(events, request).status is ResultStatus.SUCCESS
    raw = events[1]
    assert raw.payload.type == "raw"
    assert raw.payload.reason == "line_too_long"
    assert raw.raw == "x" * 1024
    h.assert_nothing_left()


async def test_stderr_is_capped_with_a_notice(tmp_path: Path) -> None:
    spec = FakeSpec(steps=[*({"err": f"noise {i}"} for i in range(10)), {"exit": 2}])
    h = Harness(tmp_path, spec, RunLimits(max_stderr_events=3, stderr_tail_lines=2))
    request = h.request()
    events = await h.run(request)
    result = result_of(events, request)
    assert types(events) == ["stderr", "stderr", "stderr", "lifecycle", "result"]
    notice = events[4].payload
    assert notice.type == "lifecycle"
    assert (notice.state, notice.detail["dropped_lines"]) == ("stderr_capped", 7)
    assert result.error is not None
    assert "noise 8\nnoise 9" in result.error  # the tail is kept even past the cap


async def test_home_files_and_env(tmp_path: Path) -> None:
    home = tmp_path / "home"
    files = {PurePosixPath(".fake/settings.json"): '{"model": "m"}'}
    spec = FakeSpec(
        steps=[{"env": "HOME"}, {"env": "FAKE_TOKEN"}, {"env": "USER"}, line(type="result")],
        env={"FAKE_TOKEN": "t"},
        files=files,
    )
    h = Harness(home, spec)
    request = h.request()
    events = await h.run(request)
    assert [e.raw for e in events[1:4]] == [f"HOME={home}", "FAKE_TOKEN=t", "USER=<unset>"]
    written = home / ".fake" / "settings.json"
    assert written.read_text() == '{"model": "m"}'
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(written.parent.stat().st_mode) == 0o700


async def test_a_missing_binary_raises_before_any_event(tmp_path: Path) -> None:
    spec = FakeSpec(argv_prefix=("/nonexistent/fake-cli",))
    h = Harness(tmp_path, spec)
    events: list[AgentEvent] = []

    async def drain() -> None:
        async with contextlib.aclosing(h.agent.execute(h.request())) as stream:
            async for event in stream:
                events.append(event)

    with anyio.fail_after(DEADLINE_S), pytest.raises(ExecutableNotFound):
        await drain()
    assert events == []
    assert h.agent.running == frozenset()


async def test_concurrent_runs_are_independent(tmp_path: Path) -> None:
    spec = FakeSpec(steps=[line(type="init"), {"sleep": 0.2}, line(type="result", text="ok")])
    h = Harness(tmp_path, spec)
    requests = [h.request() for _ in range(4)]
    runs: dict[str, list[AgentEvent]] = {}

    async def one(request: AgentRequest) -> None:
        runs[request.id] = await h.run(request)

    async with anyio.create_task_group() as tg:
        for request in requests:
            tg.start_soon(one, request)
    for request in requests:
        assert result_of(runs[request.id], request).status is ResultStatus.SUCCESS
    h.assert_nothing_left()


# --- the same loop over docker exec -------------------------------------------------------


@pytest.fixture(scope="module")
def busybox(docker_client: docker.DockerClient, test_image: str) -> Iterator[str]:
    container = docker_client.containers.run(
        test_image, ["sleep", "3600"], detach=True, init=True, labels={"dev.codeyard.test": "1"}
    )
    try:
        yield str(container.id)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def shell_spec(script: str) -> FakeSpec:
    # The fake spec appends its JSON steps as the last argument: sh -c takes it as $0.
    return FakeSpec(argv_prefix=("sh", "-c", script), env={"PATH": "/bin:/usr/bin"},
                    interrupt=SHORT_INTERRUPT)  # fmt: skip


async def test_the_loop_over_docker_exec(
    tmp_path: Path, docker_client: docker.DockerClient, busybox: str
) -> None:
    launcher = DockerExecLauncher(docker_client, busybox)
    script = (
        """echo '{"type": "init", "session_id": "in-docker"}'; echo "HOME=$HOME" >&2; """
        """sleep 300 & echo '{"type": "message", "text": "working"}'; wait"""
    )
    agent = CliCodeAgent(
        shell_spec(script), launcher, tmp_path, cli_home=PurePosixPath("/tmp"), limits=FAST
    )
    request = AgentRequest(provider=PROVIDER, prompt="x", idle_timeout_s=1.0, timeout_s=20.0)
    events: list[AgentEvent] = []
    with anyio.fail_after(DEADLINE_S):
        async with contextlib.aclosing(agent.execute(request)) as stream:
            async for event in stream:
                events.append(event)
    result = result_of(events, request)
    assert (result.status, result.terminal_reason) == (ResultStatus.TIMEOUT, "idle_timeout")
    assert result.session_id == "in-docker"
    assert result.exit_code == 128 + signal.SIGINT  # sh dies of the first interrupt step
    assert "HOME=/tmp" in [e.payload.line for e in events if e.payload.type == "stderr"]
    # Nothing of the group is left in the container.
    ps = docker_client.containers.get(busybox).exec_run(["ps", "-o", "args"]).output
    assert isinstance(ps, bytes)
    commands = ps.decode().splitlines()
    assert "sleep 3600" in commands  # the container's own
    assert "sleep 300" not in commands, commands
