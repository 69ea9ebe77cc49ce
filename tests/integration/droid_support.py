"""Shared by the Droid CLI tests (integration and contract): the real ``droid`` binary, a
DroidSpec pointed at a scripted model server, and a census of the run's processes.

Why a census by environment marker: Droid starts each shell tool in a session of its own
(``factory-execute-supervisor``), out of reach of the CLI's process group. Every process of
a run inherits the run's environment, so a unique variable finds all of them in ``/proc``.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import pytest

from codeyard.adapters.cli.agent import CliCodeAgent, local_agent
from codeyard.adapters.droid import DroidOptions, DroidSpec, DroidWireApi
from codeyard.domain.agent import AgentRequest, AgentResult
from codeyard.domain.events import AgentEvent
from codeyard.testing.agents import AgentBinaryMissing, agent_binary
from codeyard.testing.model_server import ModelServer, Scenario, Stall, Text
from tests.services import service_unavailable

API_KEY = "sk-codeyard-droid-7d41e0"
MARKER_ENV = "CODEYARD_TEST_MARKER"
MODEL = "mock-model"
#: Upper bound of one run in these tests; a hung adapter fails instead of hanging.
RUN_DEADLINE_S = 60.0
#: The model API each wire format calls, as the server records it.
WIRE_PATHS = {
    DroidWireApi.ANTHROPIC: "/v1/messages",
    DroidWireApi.CHAT_COMPLETIONS: "/v1/chat/completions",
    DroidWireApi.RESPONSES: "/v1/responses",
}

T = TypeVar("T")
OnEvent = Callable[[AgentEvent], Awaitable[None]]


def need_droid() -> Path:
    try:
        return agent_binary("droid")
    except AgentBinaryMissing as exc:
        service_unavailable("the droid CLI", str(exc), "scripts/install-agents droid")


def base_url_for(server_url: str, wire: DroidWireApi) -> str:
    # The Anthropic SDK appends /v1/messages; the OpenAI SDK expects the /v1 root.
    return server_url if wire is DroidWireApi.ANTHROPIC else f"{server_url}/v1"


def droid_spec(
    server_url: str,
    *,
    marker: str,
    wire: DroidWireApi = DroidWireApi.ANTHROPIC,
    workdir: str | None = None,
    airgapped: bool = True,
) -> DroidSpec:
    return DroidSpec(
        DroidOptions(
            binary=str(need_droid()),
            wire_api=wire,
            base_url=base_url_for(server_url, wire),
            api_key=API_KEY,
            model=MODEL,
            workdir=workdir,
            airgapped=airgapped,
            env={MARKER_ENV: marker},
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
            if needle not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            found.append(Proc(int(entry), os.getpgid(int(entry)), cmdline.decode(errors="replace")))
    return found


def live_group_members(pgids: Iterable[int]) -> list[str]:
    """Every process, zombies excepted, still in one of ``pgids`` (a zombie runs nothing;
    PID 1 reaps re-parented orphans only after a while)."""
    wanted = set(pgids)
    members = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) in wanted and fields[0] != "Z":
                members.append(f"{entry} {fields[0]} pgid={fields[2]}")
    return members


def final_result(events: list[AgentEvent], request: AgentRequest) -> AgentResult:
    """Checks the run ended with exactly one result, last, and ``seq`` 0..n-1."""
    assert events, "a run always yields at least its result"
    assert [e.seq for e in events] == list(range(len(events)))
    terminal = [i for i, e in enumerate(events) if e.is_terminal]
    assert terminal == [len(events) - 1], f"result positions {terminal} of {len(events)}"
    assert all(e.run_id == request.id and e.provider == "droid" for e in events)
    payload = events[-1].payload
    assert payload.type == "result"
    return payload.result


async def wait_for(condition: Callable[[], bool], limit_s: float = 20.0) -> None:
    """Poll ``condition`` (state outside the event loop: /proc, the server's log)."""
    with anyio.fail_after(limit_s):
        while True:
            if condition():
                return
            await anyio.sleep(0.05)


class Harness:
    """Droid (local subprocesses, private HOME and workdir under ``tmp_path``) pointed at
    ``server``, with a census of the run's processes."""

    def __init__(
        self, server: ModelServer, tmp_path: Path, wire: DroidWireApi, *, airgapped: bool = True
    ) -> None:
        self.server = server
        self.wire = wire
        self.marker = uuid.uuid4().hex
        self.workdir = tmp_path / "work"
        self.workdir.mkdir(exist_ok=True)
        self.spec = droid_spec(server.base_url, marker=self.marker, wire=wire, airgapped=airgapped)
        self.agent: CliCodeAgent = local_agent(self.spec, tmp_path / "home")
        #: Every process of the run seen while it ran.
        self.seen: dict[int, Proc] = {}

    def request(self, prompt: str, **fields: Any) -> AgentRequest:
        fields.setdefault("workdir", str(self.workdir))
        return AgentRequest(provider="droid", prompt=prompt, **fields)

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

    def model_bodies(self) -> list[str]:
        return [json.dumps(r.body) for r in self.server.model_requests()]

    async def assert_nothing_left(self, within_s: float = 0.0) -> None:
        """No process of the run is left (after ``within_s``: Droid's tool supervisor
        polls its owner every 2 s before it kills the tool's group)."""
        if within_s:
            await wait_for(lambda: processes_with(self.marker) == [], within_s)
        assert processes_with(self.marker) == [], "a process of the run is still alive"
        assert self.seen, "the census saw the run's processes while it ran"
        assert live_group_members(p.pgid for p in self.seen.values()) == []
        assert self.agent.running == frozenset()


@contextlib.asynccontextmanager
async def run_harness(
    scenario: Scenario,
    tmp_path: Path,
    wire: DroidWireApi = DroidWireApi.ANTHROPIC,
    *,
    airgapped: bool = True,
) -> AsyncIterator[Harness]:
    async with ModelServer(scenario) as server:
        yield Harness(server, tmp_path, wire, airgapped=airgapped)


# --- the CodeAgent contract suite (tests/contract/test_code_agent.py) ---------------------


def droid_subject(
    make: Callable[[CliCodeAgent, str, str, Callable[[], Awaitable[set[str]]]], T],
    request: pytest.FixtureRequest,
    quick: str,
    hang: str,
) -> T:
    """The contract's subject for the real droid CLI: ``make(agent, quick, hang,
    leftovers)``. One scripted server (in its own thread: the factories are synchronous)
    answers both prompts; replies are chosen from the request body, so ``is_side`` routes
    by prompt: the quick turn gets the one-line side reply, the hang prompt a stall."""
    need_droid()
    scenario = Scenario(
        turns=[[Stall()]],
        side_reply=[Text("Added the README.", chunk_size=0)],
        is_side=lambda _dialect, body: hang not in json.dumps(body),
    )
    stack = contextlib.ExitStack()
    request.addfinalizer(stack.close)
    portal = stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio"))
    server = stack.enter_context(portal.wrap_async_context_manager(ModelServer(scenario)))
    tmp_path: Path = request.getfixturevalue("tmp_path")
    workdir = tmp_path / "work"
    workdir.mkdir()
    marker = uuid.uuid4().hex
    agent = local_agent(
        droid_spec(server.base_url, marker=marker, workdir=str(workdir)), tmp_path / "home"
    )

    async def leftovers() -> set[str]:
        procs = {f"pid {p.pid}: {p.cmdline}" for p in processes_with(marker)}
        return procs | {f"run {run_id}" for run_id in agent.running}

    return make(agent, quick, hang, leftovers)
