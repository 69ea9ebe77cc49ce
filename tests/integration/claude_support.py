"""Shared by the Claude Code tests (integration and contract): the real ``claude`` binary,
a ClaudeSpec pointed at a scripted model server, and a process census.

"No leftover processes" is checked by an environment marker, as in
``codex_gemini_support`` (whose census helpers are reused): Claude Code runs each Bash
tool command in a session and process group of its own (``setsid``), so the CLI's process
group alone does not cover its tools; every process of a run inherits the run's
environment, so a unique variable put there finds all of them in ``/proc``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import TypeVar

import anyio
import anyio.from_thread
import pytest

from codeyard.adapters.claude import ClaudeConfig, ClaudeSpec
from codeyard.adapters.cli.agent import CliCodeAgent, local_agent
from codeyard.adapters.cli.types import InterruptStep
from codeyard.domain.agent import AgentRequest
from codeyard.domain.events import AgentEvent
from codeyard.testing.agents import AgentBinaryMissing, agent_binary
from codeyard.testing.model_server import ModelServer, Scenario, Stall, Text
from tests.integration.codex_gemini_support import (
    MARKER_ENV,
    Proc,
    live_group_members,
    new_marker,
    processes_with,
)
from tests.services import service_unavailable

API_KEY = "sk-ant-codeyard-test-5b7e2d"
#: Upper bound of one run in these tests; a hung adapter fails instead of hanging.
RUN_DEADLINE_S = 60.0

OnEvent = Callable[[AgentEvent], Awaitable[None]]
T = TypeVar("T")


def need_claude() -> Path:
    try:
        return agent_binary("claude")
    except AgentBinaryMissing as exc:
        service_unavailable("the claude CLI", str(exc), "scripts/install-agents claude")


def claude_spec(
    base_url: str,
    *,
    marker: str,
    max_retries: int = 0,
    interrupt: tuple[InterruptStep, ...] | None = None,
    workdir: str | None = None,
) -> ClaudeSpec:
    config = ClaudeConfig(
        binary=str(need_claude()),
        base_url=base_url,
        api_key=API_KEY,
        max_retries=max_retries,
        workdir=workdir,
        extra_env={MARKER_ENV: marker},
    )
    if interrupt is not None:
        config = dataclasses.replace(config, interrupt=interrupt)
    return ClaudeSpec(config)


def assert_no_secret(events: list[AgentEvent]) -> None:
    for event in events:
        assert API_KEY not in event.model_dump_json(), f"the API key leaked into {event}"


class ClaudeHarness:
    """A Claude agent (local subprocesses, private HOME and workdir under ``tmp_path``)
    pointed at ``server``, with a census of the run's processes."""

    def __init__(
        self,
        server: ModelServer,
        tmp_path: Path,
        *,
        max_retries: int = 0,
        interrupt: tuple[InterruptStep, ...] | None = None,
    ) -> None:
        self.server = server
        self.marker = new_marker()
        self.workdir = tmp_path / "work"
        self.workdir.mkdir(exist_ok=True)
        spec = claude_spec(
            server.base_url, marker=self.marker, max_retries=max_retries, interrupt=interrupt
        )
        self.agent: CliCodeAgent = local_agent(spec, tmp_path / "home")
        #: Every process of the run seen while it ran (by the marker).
        self.seen: dict[int, Proc] = {}

    def request(self, prompt: str, **fields: object) -> AgentRequest:
        fields.setdefault("workdir", str(self.workdir))
        return AgentRequest(provider="claude", prompt=prompt, **fields)

    def census(self) -> list[Proc]:
        procs = processes_with(self.marker)
        self.seen.update((p.pid, p) for p in procs)
        return procs

    async def run(self, request: AgentRequest, on_event: OnEvent | None = None) -> list[AgentEvent]:
        events: list[AgentEvent] = []
        with anyio.fail_after(RUN_DEADLINE_S):
            async with contextlib.aclosing(self.agent.execute(request)) as stream:
                async for event in stream:
                    events.append(event)
                    self.census()
                    if on_event is not None:
                        await on_event(event)
        return events

    def body(self, index: int) -> str:
        """The ``index``-th main model request's body, as JSON text."""
        return json.dumps(self.server.model_requests()[index].body, ensure_ascii=False)

    def assert_nothing_left(self) -> None:
        assert processes_with(self.marker) == [], "a process of the run is still alive"
        assert self.seen, "the census saw the run's processes while it ran"
        assert live_group_members(p.pgid for p in self.seen.values()) == []
        assert self.agent.running == frozenset()


@contextlib.asynccontextmanager
async def claude_harness(
    scenario: Scenario,
    tmp_path: Path,
    *,
    max_retries: int = 0,
    interrupt: tuple[InterruptStep, ...] | None = None,
) -> AsyncIterator[ClaudeHarness]:
    async with ModelServer(scenario) as server:
        yield ClaudeHarness(server, tmp_path, max_retries=max_retries, interrupt=interrupt)


# --- the CodeAgent contract suite (tests/contract/test_code_agent.py) ---------------------

#: The session the contract's resume test names. Claude resumes by session id or title and
#: refuses an unknown one, so a real session with this title is made first.
CONTRACT_SESSION = "0f3c2a9e-session"

Leftovers = Callable[[], Awaitable[set[str]]]


def _start_server(request: pytest.FixtureRequest, scenario: Scenario) -> ModelServer:
    """A model server in its own thread and event loop until the test ends (the
    contract's factories are synchronous)."""
    stack = contextlib.ExitStack()
    request.addfinalizer(stack.close)
    portal = stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio"))
    return stack.enter_context(portal.wrap_async_context_manager(ModelServer(scenario)))


def _seed_session(spec: ClaudeSpec, home: Path, workdir: Path) -> None:
    """Run the real CLI once with ``--name CONTRACT_SESSION`` in this HOME and workdir
    (Claude files sessions by project folder), so ``--resume=CONTRACT_SESSION`` finds it."""
    seed = AgentRequest(provider="claude", prompt="seed the contract session")
    invocation = spec.invocation(seed, home=PurePosixPath(home))
    argv = list(invocation.argv)
    argv[argv.index("--") : argv.index("--")] = ["--name", CONTRACT_SESSION]
    done = subprocess.run(
        argv,
        env={**invocation.env, "HOME": str(home)},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"seeding the claude session failed: {done.stderr}"


def claude_subject(
    make: Callable[[CliCodeAgent, str, str, Leftovers], T],
    request: pytest.FixtureRequest,
    quick: str,
    hang: str,
) -> T:
    """The contract's subject for the real Claude CLI: ``make(agent, quick, hang,
    leftovers)``. One scripted server answers both prompts: a request without the hang
    prompt gets the one-line side reply (the quick turn), the hang prompt's a stall."""
    need_claude()
    scenario = Scenario(
        turns=[[Stall()]],
        side_reply=[Text("Added the README.", chunk_size=0)],
        is_side=lambda _dialect, body: hang not in json.dumps(body),
    )
    server = _start_server(request, scenario)
    marker = new_marker()
    tmp_path: Path = request.getfixturevalue("tmp_path")
    home, workdir = tmp_path / "home", tmp_path / "work"
    workdir.mkdir()
    # The contract's requests name no workdir: the spec's default puts them where the
    # seeded session lives (never the test process's own cwd, the repository).
    spec = claude_spec(server.base_url, marker=marker, workdir=str(workdir))
    _seed_session(spec, home, workdir)
    agent = local_agent(spec, home)

    async def leftovers() -> set[str]:
        procs = {f"pid {p.pid}: {p.cmdline}" for p in processes_with(marker)}
        return procs | {f"run {run_id}" for run_id in agent.running}

    return make(agent, quick, hang, leftovers)
