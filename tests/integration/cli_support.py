"""Provider-neutral support for the real-CLI tests (integration and contract): the pinned
binaries, a process census by environment marker, the run harness built on it, and a few
scripted-server helpers.

Why a marker: "no leftover processes" must cover what the CLI's process group cannot —
Gemini, Claude and Droid start their shell tools in process groups (or sessions) of their
own. Every process of a run (the CLI, its tools, their children) inherits the run's
environment, so a unique variable put there finds all of them in ``/proc``.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import anyio
import anyio.abc
import anyio.from_thread
import pytest

from codeyard.adapters.cli.agent import CliCodeAgent, local_agent
from codeyard.adapters.cli.types import ProviderSpec
from codeyard.domain.agent import AgentRequest, AgentResult
from codeyard.domain.events import AgentEvent
from codeyard.testing.agents import AgentBinaryMissing, agent_binary
from codeyard.testing.model_server import ModelServer, Scenario, Stall, Text
from tests.services import service_unavailable

MARKER_ENV = "CODEYARD_TEST_MARKER"
#: Upper bound of one run in these tests; a hung adapter fails instead of hanging.
RUN_DEADLINE_S = 60.0

OnEvent = Callable[[AgentEvent], Awaitable[None]]
Leftovers = Callable[[], Awaitable[set[str]]]
S = TypeVar("S", bound=ProviderSpec)


def need_binary(provider: str) -> Path:
    """The pinned ``provider`` binary; skips (fails in CI) when it is not installed."""
    try:
        return agent_binary(provider)
    except AgentBinaryMissing as exc:
        service_unavailable(f"the {provider} CLI", str(exc), f"scripts/install-agents {provider}")


def new_marker() -> str:
    return uuid.uuid4().hex


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


def assert_no_secret(events: list[AgentEvent], secret: str) -> None:
    for event in events:
        assert secret not in event.model_dump_json(), f"the API key leaked into {event}"


async def wait_for(condition: Callable[[], bool], limit_s: float = 20.0) -> None:
    """Poll ``condition`` (the state polled is outside the event loop: /proc, a server's
    request log) until it holds; fails after ``limit_s``."""
    with anyio.fail_after(limit_s):
        while True:
            if condition():
                return
            await anyio.sleep(0.05)


async def collect(
    agent: CliCodeAgent, request: AgentRequest, on_event: OnEvent | None = None
) -> list[AgentEvent]:
    """Every event of one run (within ``RUN_DEADLINE_S``), ``on_event`` called on each."""
    events: list[AgentEvent] = []
    with anyio.fail_after(RUN_DEADLINE_S):
        async with contextlib.aclosing(agent.execute(request)) as stream:
            async for event in stream:
                events.append(event)
                if on_event is not None:
                    await on_event(event)
    return events


class CensusHarness(Generic[S]):
    """One provider's agent (local subprocesses, private HOME and workdir under
    ``tmp_path``) pointed at ``server``, with a census of the run's processes.
    ``make_spec(marker)`` builds the spec that puts the marker in the run's environment."""

    def __init__(
        self,
        provider: str,
        server: ModelServer,
        tmp_path: Path,
        make_spec: Callable[[str], S],
    ) -> None:
        self.provider = provider
        self.server = server
        self.marker = new_marker()
        self.workdir = tmp_path / "work"
        self.workdir.mkdir(exist_ok=True)
        self.spec = make_spec(self.marker)
        self.agent: CliCodeAgent = local_agent(self.spec, tmp_path / "home")
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
        async def census_then(event: AgentEvent) -> None:
            self.census()
            if on_event is not None:
                await on_event(event)

        return await collect(self.agent, request, census_then)

    def assert_census_clean(self) -> None:
        assert processes_with(self.marker) == [], "a process of the run is still alive"
        assert self.seen, "the census saw the run's processes while it ran"
        assert live_group_members(p.pgid for p in self.seen.values()) == []
        assert self.agent.running == frozenset()


def start_server(request: pytest.FixtureRequest, scenario: Scenario) -> ModelServer:
    """A model server running in its own thread and event loop until the test ends (the
    contract's factories are synchronous)."""
    stack = contextlib.ExitStack()
    request.addfinalizer(stack.close)
    portal = stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio"))
    return stack.enter_context(portal.wrap_async_context_manager(ModelServer(scenario)))


def quick_or_hang(hang: str) -> Scenario:
    """The contract's one scripted server for both prompts. Replies are chosen per request
    from its body, so ``is_side`` routes by prompt: a request without the ``hang`` prompt
    gets the one-line side reply (the quick turn), the hang prompt's main turn 0, a stall."""
    return Scenario(
        turns=[[Stall()]],
        side_reply=[Text("Added the README.", chunk_size=0)],
        is_side=lambda _dialect, body: hang not in json.dumps(body),
    )


def marker_leftovers(marker: str, agent: CliCodeAgent) -> Leftovers:
    """The contract's ``leftovers``: processes with ``marker`` and runs still tracked."""

    async def leftovers() -> set[str]:
        procs = {f"pid {p.pid}: {p.cmdline}" for p in processes_with(marker)}
        return procs | {f"run {run_id}" for run_id in agent.running}

    return leftovers


@contextlib.asynccontextmanager
async def proxy_recorder() -> AsyncIterator[tuple[str, list[str]]]:
    """A local listener posing as the HTTP(S) proxy: records the first line of every
    connection (``CONNECT host:443 HTTP/1.1``) and refuses it."""
    seen: list[str] = []

    async def refuse(client: anyio.abc.SocketStream) -> None:
        async with client:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                first = await client.receive(4096)
                seen.append(first.split(b"\r\n", 1)[0].decode(errors="replace"))
                await client.send(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, refuse)
        yield f"http://127.0.0.1:{port}", seen
        tg.cancel_scope.cancel()
