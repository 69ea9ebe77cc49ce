"""Shared by the Codex and Gemini CLI tests (integration and contract): the real binaries,
specs pointed at a scripted model server, and a process census by environment marker.

Why a marker: "no leftover processes" must cover what the CLI's process group cannot —
Gemini detaches its shell tools into process groups of their own. Every process of a run
(the CLI, its tools, their children) inherits the run's environment, so a unique variable
put there finds all of them in ``/proc``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TypeVar

import anyio
import anyio.from_thread
import pytest

from codeyard.adapters.cli.agent import CliCodeAgent, local_agent
from codeyard.adapters.cli.home import write_home_files
from codeyard.adapters.codex import CodexOptions, CodexSpec
from codeyard.adapters.gemini import GeminiOptions, GeminiSpec
from codeyard.domain.agent import AgentRequest, AgentResult
from codeyard.domain.events import AgentEvent
from codeyard.testing.agents import AgentBinaryMissing, agent_binary
from codeyard.testing.model_server import ModelServer, Scenario, Stall, Text
from tests.services import service_unavailable

API_KEY = "sk-codeyard-test-3c1f9a"
MARKER_ENV = "CODEYARD_TEST_MARKER"
CODEX_MODEL = "mock-model"
GEMINI_MODEL = "gemini-2.5-pro"
#: Upper bound of one run in these tests; a hung adapter fails instead of hanging.
RUN_DEADLINE_S = 60.0

OnEvent = Callable[[AgentEvent], Awaitable[None]]
T = TypeVar("T")


def need_binary(provider: str) -> Path:
    try:
        return agent_binary(provider)
    except AgentBinaryMissing as exc:
        service_unavailable(f"the {provider} CLI", str(exc), f"scripts/install-agents {provider}")


def new_marker() -> str:
    return uuid.uuid4().hex


def codex_spec(
    base_url: str, *, marker: str, workdir: str | None = None, env: dict[str, str] | None = None
) -> CodexSpec:
    return CodexSpec(
        CodexOptions(
            binary=str(need_binary("codex")),
            base_url=f"{base_url}/v1",
            api_key=API_KEY,
            model=CODEX_MODEL,
            max_retries=0,
            workdir=workdir,
            env={**(env or {}), MARKER_ENV: marker},
        )
    )


def gemini_spec(
    base_url: str, *, marker: str, workdir: str | None = None, env: dict[str, str] | None = None
) -> GeminiSpec:
    return GeminiSpec(
        GeminiOptions(
            binary=str(need_binary("gemini")),
            base_url=base_url,
            api_key=API_KEY,
            model=GEMINI_MODEL,
            max_attempts=1,
            workdir=workdir,
            env={**(env or {}), MARKER_ENV: marker},
        )
    )


@dataclass(frozen=True)
class Proc:
    pid: int
    pgid: int
    cmdline: str


def processes_with(marker: str) -> list[Proc]:
    """Live processes whose environment holds ``MARKER_ENV=marker`` (zombies have none)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            environ = Path(f"/proc/{entry}/environ").read_bytes()
            if needle not in environ.split(b"\0"):
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            found.append(Proc(int(entry), os.getpgid(int(entry)), cmdline.decode(errors="replace")))
    return found


def live_group_members(pgids: Iterable[int]) -> list[str]:
    """``pid state ppid pgid`` of every process, zombies excepted, in one of ``pgids``.

    Zombies are dead: an orphan the CLI left is re-parented to PID 1, and this machine's
    PID 1 reaps them, but only after a while; until then ``killpg(pgid, 0)`` still finds
    the group. What matters is that nothing of the run still executes.
    """
    wanted = set(pgids)
    members = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            state, ppid, pgid = fields[0], fields[1], int(fields[2])
            if pgid in wanted and state != "Z":
                members.append(f"{entry} {state} ppid={ppid} pgid={pgid}")
    return members


def final_result(events: list[AgentEvent], request: AgentRequest) -> AgentResult:
    """Checks the run ended with exactly one result, last, and ``seq`` 0..n-1."""
    assert events, "a run always yields at least its result"
    assert [e.seq for e in events] == list(range(len(events)))
    terminal = [i for i, e in enumerate(events) if e.is_terminal]
    assert terminal == [len(events) - 1], f"result positions {terminal} of {len(events)}"
    assert all(e.run_id == request.id and e.provider == request.provider for e in events)
    payload = events[-1].payload
    assert payload.type == "result"
    return payload.result


def assert_no_secret(events: list[AgentEvent]) -> None:
    for event in events:
        assert API_KEY not in event.model_dump_json(), f"the API key leaked into {event}"


class Harness:
    """One provider's agent (local subprocesses, private HOME and workdir under
    ``tmp_path``) pointed at ``server``, with a census of the run's processes."""

    def __init__(
        self,
        provider: str,
        server: ModelServer,
        tmp_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.provider = provider
        self.server = server
        self.marker = new_marker()
        self.workdir = tmp_path / "work"
        self.workdir.mkdir(exist_ok=True)
        make_spec = codex_spec if provider == "codex" else gemini_spec
        spec = make_spec(server.base_url, marker=self.marker, env=env)
        self.agent: CliCodeAgent = local_agent(spec, tmp_path / "home")
        #: Every process of the run seen while it ran (by the marker).
        self.seen: dict[int, Proc] = {}

    def request(self, prompt: str, **fields: object) -> AgentRequest:
        fields.setdefault("workdir", str(self.workdir))
        return AgentRequest(provider=self.provider, prompt=prompt, **fields)

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

    def assert_nothing_left(self) -> None:
        assert processes_with(self.marker) == [], "a process of the run is still alive"
        assert self.seen, "the census saw the run's processes while it ran"
        assert live_group_members(p.pgid for p in self.seen.values()) == []
        assert self.agent.running == frozenset()


@contextlib.asynccontextmanager
async def run_harness(
    provider: str, scenario: Scenario, tmp_path: Path, env: dict[str, str] | None = None
) -> AsyncIterator[Harness]:
    async with ModelServer(scenario) as server:
        yield Harness(provider, server, tmp_path, env)


async def wait_for(condition: Callable[[], bool], limit_s: float = 20.0) -> None:
    """Poll ``condition`` (the state polled is outside the event loop: /proc, a server's
    request log) until it holds; fails after ``limit_s``."""
    with anyio.fail_after(limit_s):
        while True:
            if condition():
                return
            await anyio.sleep(0.05)


def body_text(h: Harness, index: int) -> str:
    """The ``index``-th main model request's body, as JSON text."""
    return json.dumps(h.server.model_requests()[index].body)


# --- the CodeAgent contract suite (tests/contract/test_code_agent.py) ---------------------

#: The session the contract's resume test names: a real one is made for the CLIs that
#: refuse an unknown id (Gemini exits 42), so that "resume follows the capability" holds.
CONTRACT_SESSION = "0f3c2a9e-session"

Leftovers = Callable[[], Awaitable[set[str]]]
_gemini_templates: dict[str, tuple[Path, Path]] = {}


def _start_server(request: pytest.FixtureRequest, scenario: Scenario) -> ModelServer:
    """A model server running in its own thread and event loop until the test ends (the
    contract's factories are synchronous)."""
    stack = contextlib.ExitStack()
    request.addfinalizer(stack.close)
    portal = stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio"))
    return stack.enter_context(portal.wrap_async_context_manager(ModelServer(scenario)))


def _seeded_gemini(request: pytest.FixtureRequest, server: ModelServer) -> tuple[Path, Path]:
    """(home, workdir) holding a real Gemini session named ``CONTRACT_SESSION``: made
    once per test session by the real CLI (``--session-id``), copied for each test. The
    workdir is shared: Gemini files sessions by project folder."""
    if "gemini" not in _gemini_templates:
        root: Path = request.getfixturevalue("tmp_path_factory").mktemp("gemini-contract")
        home, workdir = root / "home", root / "work"
        workdir.mkdir()
        spec = gemini_spec(server.base_url, marker=new_marker(), workdir=str(workdir))
        seed = AgentRequest(provider="gemini", prompt="seed the contract session")
        invocation = spec.invocation(seed, home=PurePosixPath(home))
        write_home_files(home, invocation.files)
        done = subprocess.run(
            [*invocation.argv, f"--session-id={CONTRACT_SESSION}"],
            env={**invocation.env, "HOME": str(home)},
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"seeding the gemini session failed: {done.stderr}"
        assert CONTRACT_SESSION in done.stdout
        _gemini_templates["gemini"] = (home, workdir)
    home, workdir = _gemini_templates["gemini"]
    copy = request.getfixturevalue("tmp_path") / "home"
    shutil.copytree(home, copy)
    return copy, workdir


def cli_subject(
    make: Callable[[CliCodeAgent, str, str, Leftovers], T],
    provider: str,
    request: pytest.FixtureRequest,
    quick: str,
    hang: str,
) -> T:
    """The contract's subject for the real ``provider`` CLI: ``make(agent, quick, hang,
    leftovers)``.

    One scripted server answers both prompts. Replies are chosen per request from its
    body, so the scenario's ``is_side`` hook routes by prompt: a request without the hang
    prompt gets the one-line side reply (the quick turn), the hang prompt's gets main
    turn 0, a stall.
    """
    need_binary(provider)
    scenario = Scenario(
        turns=[[Stall()]],
        side_reply=[Text("Added the README.", chunk_size=0)],
        is_side=lambda _dialect, body: hang not in json.dumps(body),
    )
    server = _start_server(request, scenario)
    marker = new_marker()
    tmp_path: Path = request.getfixturevalue("tmp_path")
    if provider == "gemini":
        home, workdir = _seeded_gemini(request, server)
        spec: CodexSpec | GeminiSpec = gemini_spec(
            server.base_url, marker=marker, workdir=str(workdir)
        )
    else:
        home, workdir = tmp_path / "home", tmp_path / "work"
        workdir.mkdir()
        spec = codex_spec(server.base_url, marker=marker, workdir=str(workdir))
    agent = local_agent(spec, home)

    async def leftovers() -> set[str]:
        procs = {f"pid {p.pid}: {p.cmdline}" for p in processes_with(marker)}
        return procs | {f"run {run_id}" for run_id in agent.running}

    return make(agent, quick, hang, leftovers)
