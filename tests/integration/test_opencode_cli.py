"""The REAL ``opencode serve`` (opencode-ai 1.18.33) driven by OpencodeCodeAgent over HTTP,
against the scripted model server (OpenAI Chat Completions), as a local process group.

Every run is checked to be well formed (``seq`` 0..n-1, exactly one result and it is
last). Processes are checked through the server's process group and a unique ``sleep``
duration used as a marker in tool commands: after a cancel no tool process may be left,
and after ``aclose`` the group must be gone. The event-stream reconnect is exercised by a
TCP relay between the agent and the server that cuts (or delays) the ``/event`` stream.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import anyio.abc
import docker
import docker.errors
import pytest

from codeyard.adapters.docker.exec_launcher import DockerExecLauncher
from codeyard.adapters.opencode import OpencodeCodeAgent, OpencodeConfig
from codeyard.adapters.opencode.server import free_port
from codeyard.adapters.process.local import LocalProcessLauncher
from codeyard.domain.agent import AgentRequest, AgentResult, ResultStatus
from codeyard.domain.events import (
    AgentEvent,
    ErrorPayload,
    InitPayload,
    LifecyclePayload,
    MessagePayload,
    ToolResultPayload,
    ToolUsePayload,
)
from codeyard.testing.model_server import Delay, HttpError, ModelServer, Scenario, Stall, Text
from codeyard.testing.model_server.tools import shell, write_file
from tests.contract.test_code_agent import assert_well_formed_run
from tests.integration.docker_cli_support import HOME, WORKSPACE, busybox_worker
from tests.integration.opencode_support import opencode_binary

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

RUN_DEADLINE_S = 90.0


class Rig:
    def __init__(
        self, agent: OpencodeCodeAgent, model: ModelServer, work: Path, base_url: str = ""
    ) -> None:
        self.agent, self.model, self.work = agent, model, work
        #: The model server as the opencode server reaches it.
        self.base_url = base_url or model.base_url

    def request(self, prompt: str, **fields: Any) -> AgentRequest:
        fields.setdefault("workdir", str(self.work))
        return AgentRequest(
            provider="opencode",
            prompt=prompt,
            base_url=self.base_url,
            model="mock-model",
            **fields,
        )

    async def run(
        self,
        request: AgentRequest,
        on_event: Callable[[AgentEvent], Awaitable[None]] | None = None,
    ) -> tuple[list[AgentEvent], AgentResult]:
        events: list[AgentEvent] = []
        with anyio.fail_after(RUN_DEADLINE_S):
            async with contextlib.aclosing(self.agent.execute(request)) as stream:
                async for event in stream:
                    events.append(event)
                    if on_event is not None:
                        await on_event(event)
        final = assert_well_formed_run(events, request)
        assert final.payload.type == "result"
        return events, final.payload.result


@contextlib.asynccontextmanager
async def rig(tmp_path: Path, scenario: Scenario, **config: Any) -> AsyncIterator[Rig]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    async with ModelServer(scenario) as model:
        agent = OpencodeCodeAgent(
            LocalProcessLauncher(),
            tmp_path / "home",
            config=OpencodeConfig(binary=opencode_binary(), **config),
        )
        try:
            yield Rig(agent, model, work)
        finally:
            await agent.aclose()


def payloads(events: list[AgentEvent], kind: type[Any]) -> list[Any]:
    return [e.payload for e in events if isinstance(e.payload, kind)]


def _stat(pid_dir: Path) -> tuple[str, int]:
    """``(state, pgid)`` from ``/proc/PID/stat`` (comm may hold spaces: split after ")")."""
    fields = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], int(fields[2])


def live_group(pgid: int) -> list[int]:
    """Pids of the live (non-zombie) members of process group ``pgid``."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if entry.name.isdigit() and _stat(entry) != ("Z", pgid) and _stat(entry)[1] == pgid:
                found.append(int(entry.name))
    return sorted(found)


def marker_processes(marker: str) -> list[int]:
    """Pids of live (non-zombie) processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state != "Z" and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    with anyio.fail_after(timeout_s):
        while True:
            if condition():
                return
            await anyio.sleep(0.05)


def unique_sleep() -> str:
    """A ``sleep`` argument no other process on the machine uses: the process marker."""
    return f"{300 + uuid.uuid4().int % 10**6 / 10**6:.6f}"


# --- the happy paths -----------------------------------------------------------------------


async def test_a_tool_call_writes_the_file_then_the_answer_ends_the_run(tmp_path: Path) -> None:
    target = tmp_path / "work" / "hello.txt"
    scenario = Scenario(
        turns=[
            [Text("I'll write the file."), write_file("opencode", str(target), "hello ✓\n")],
            [Text("Done: wrote hello.txt.")],
        ]
    )
    async with rig(tmp_path, scenario) as r:
        request = r.request("create hello.txt", instructions="Answer like a pirate.")
        events, result = await r.run(request)
        system = json.dumps(r.model.model_requests()[0].body)
    assert result.status is ResultStatus.SUCCESS, result
    assert result.text == "Done: wrote hello.txt."
    assert target.read_text() == "hello ✓\n"
    assert "Answer like a pirate." in system, "instructions reach the model"
    [init] = payloads(events, InitPayload)
    assert (init.session_id, init.cwd) == (result.session_id, str(tmp_path / "work"))
    [use] = payloads(events, ToolUsePayload)
    [done] = payloads(events, ToolResultPayload)
    assert (use.name, done.tool_use_id, done.is_error) == ("write", use.tool_use_id, False)
    assert result.usage.input_tokens == 200  # two model calls of 100 (the scenario's usage)
    assert result.turns == 2
    assert events[0].payload == LifecyclePayload(state="server_starting")


async def test_a_second_turn_resumes_the_session_even_after_a_server_restart(
    tmp_path: Path,
) -> None:
    scenario = Scenario.text("First answer.", "Second answer.", "Third answer.")
    async with rig(tmp_path, scenario) as r:
        _, first = await r.run(r.request("remember the word kiwi"))
        second_request = r.request("which word?", session_id=first.session_id)
        events, second = await r.run(second_request)
        assert not payloads(events, LifecyclePayload) or all(
            p.state != "server_starting" for p in payloads(events, LifecyclePayload)
        ), "the server is kept between turns"
        await r.agent.aclose()  # sessions live in HOME: a new server still has them
        _, third = await r.run(r.request("and now?", session_id=first.session_id))
        history = json.dumps(r.model.model_requests()[-1].body)
    assert (second.status, second.text) == (ResultStatus.SUCCESS, "Second answer.")
    assert (third.status, third.text) == (ResultStatus.SUCCESS, "Third answer.")
    assert first.session_id == second.session_id == third.session_id
    assert "remember the word kiwi" in history
    assert "which word?" in history


async def test_an_unknown_session_starts_a_new_one_and_says_so(tmp_path: Path) -> None:
    async with rig(tmp_path, Scenario.text("Fresh.")) as r:
        events, result = await r.run(r.request("hi", session_id="ses_doesnotexist"))
    assert result.status is ResultStatus.SUCCESS
    assert result.session_id not in (None, "ses_doesnotexist")
    assert [e.code for e in payloads(events, ErrorPayload)] == ["session_not_found"]


# --- stopping ------------------------------------------------------------------------------


async def test_cancel_mid_stream_aborts_the_session(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[Text("streaming slowly... ", chunk_size=5), Stall()]])
    async with rig(tmp_path, scenario) as r:
        request = r.request("talk")

        async def cancel_on_text(event: AgentEvent) -> None:
            if isinstance(event.payload, MessagePayload) and event.payload.delta:
                await r.agent.cancel(request.id)

        _events, result = await r.run(request, cancel_on_text)
        server = r.agent.server
        assert server is not None, "an abort that worked does not cost the server"
    assert result.status is ResultStatus.CANCELLED
    assert (result.terminal_reason, result.session_id) == ("cancel_requested", result.session_id)
    assert "streaming" in result.text
    assert r.model.model_requests()[-1].outcome == "disconnected", "the model call was cut"


async def test_cancel_mid_tool_leaves_no_tool_process(tmp_path: Path) -> None:
    duration = unique_sleep()
    scenario = Scenario(turns=[[Text("Running it."), shell("opencode", f"sleep {duration}")]])
    async with rig(tmp_path, scenario) as r:
        request = r.request("run the slow thing")

        async def cancel_when_running(event: AgentEvent) -> None:
            if isinstance(event.payload, ToolUsePayload):
                await wait_until(lambda: bool(marker_processes(duration)))
                await r.agent.cancel(request.id)

        _, result = await r.run(request, cancel_when_running)
        assert marker_processes(duration) == []
        server = r.agent.server
        assert server is not None
        assert server.handle.pid is not None
        pgid = server.handle.pid
        assert live_group(pgid) == [pgid], "only the server itself is left"
        await r.agent.aclose()
        assert live_group(pgid) == [], "aclose() ends the whole process group"
    assert result.status is ResultStatus.CANCELLED


async def test_consumer_cancellation_propagates_and_aborts_the_turn(tmp_path: Path) -> None:
    duration = unique_sleep()
    scenario = Scenario(
        turns=[[Text("Running it."), shell("opencode", f"sleep {duration}")], [Text("Again.")]]
    )
    async with rig(tmp_path, scenario) as r:
        request = r.request("run the slow thing")
        seen: list[AgentEvent] = []
        with anyio.move_on_after(RUN_DEADLINE_S) as scope:
            async with contextlib.aclosing(r.agent.execute(request)) as stream:
                async for event in stream:
                    seen.append(event)
                    if isinstance(event.payload, ToolUsePayload):
                        scope.cancel()
        assert scope.cancelled_caught
        assert not any(e.is_terminal for e in seen)
        assert r.agent.running == frozenset()
        assert marker_processes(duration) == []
        # The aborted session is idle again and takes the next prompt (turn 2 of the script).
        [init] = payloads(seen, InitPayload)
        _, again = await r.run(r.request("hello again", session_id=init.session_id))
    assert (again.status, again.text) == (ResultStatus.SUCCESS, "Again.")


async def test_a_stalled_stream_hits_the_idle_timeout(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[Text("thinking about it"), Stall()]])
    async with rig(tmp_path, scenario) as r:
        started = anyio.current_time()
        _, result = await r.run(r.request("stall", idle_timeout_s=3, timeout_s=60))
        elapsed = anyio.current_time() - started
        assert r.agent.server is not None, "the session was aborted, the server kept"
    assert (result.status, result.terminal_reason) == (ResultStatus.TIMEOUT, "idle_timeout")
    assert result.text == "thinking about it"
    assert elapsed < 30


async def test_the_hard_deadline_stops_a_busy_turn(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[Text("tick ", chunk_size=0), Delay(1.0)] * 30])
    async with rig(tmp_path, scenario) as r:
        _, result = await r.run(r.request("keep talking", idle_timeout_s=5, timeout_s=8))
    assert (result.status, result.terminal_reason) == (ResultStatus.TIMEOUT, "timeout")
    assert result.duration_s < 20


# --- model errors --------------------------------------------------------------------------


async def test_a_model_http_400_ends_in_an_error_result(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[HttpError(400, message="mock: bad request")]])
    async with rig(tmp_path, scenario) as r:
        events, result = await r.run(r.request("fail"))
    assert result.status is ResultStatus.ERROR
    assert result.error == "mock: bad request"
    assert [e.code for e in payloads(events, ErrorPayload)] == ["APIError"]


async def test_a_model_http_500_is_retried_then_ends_in_an_error_result(tmp_path: Path) -> None:
    # retry-after-ms: OpenCode honours it, so its five retries do not take ~70 s.
    error = HttpError(500, message="mock: overloaded", headers={"retry-after-ms": "10"})
    async with rig(tmp_path, Scenario(turns=[[error]])) as r:
        events, result = await r.run(r.request("fail"))
        attempts = len(r.model.model_requests())
    assert result.status is ResultStatus.ERROR
    retries = [p for p in payloads(events, LifecyclePayload) if p.state == "retry"]
    assert len(retries) >= 1
    assert attempts == len(retries) + 1
    assert payloads(events, ErrorPayload)[-1].retryable


# --- secrets, permissions, start-up --------------------------------------------------------


async def test_secrets_never_reach_an_event(tmp_path: Path) -> None:
    key = "sk-codeyard-" + uuid.uuid4().hex
    scenario = Scenario.text(f"The key is {key}.")
    async with rig(tmp_path, scenario) as r:
        events, result = await r.run(r.request("leak it", env={"OPENAI_API_KEY": key}))
        server = r.agent.server
        assert server is not None
        password = server.setup.env["OPENCODE_SERVER_PASSWORD"]
        headers = r.model.model_requests()[0].headers
    assert headers.get("authorization") == f"Bearer {key}", "the key reached the model"
    dumped = "".join(e.model_dump_json() for e in events)
    assert key not in dumped
    assert password not in dumped
    assert result.text == "The key is [REDACTED]."


async def test_allowed_commands_deny_every_other_command(tmp_path: Path) -> None:
    target = tmp_path / "work" / "denied.txt"
    scenario = Scenario(
        turns=[
            [shell("opencode", f"touch {target}")],
            [shell("opencode", "ls -a")],
            [Text("One refused, one allowed.")],
        ]
    )
    async with rig(tmp_path, scenario) as r:
        events, result = await r.run(r.request("touch it", allowed_commands=("ls",)))
    assert result.status is ResultStatus.SUCCESS
    denied, allowed = payloads(events, ToolResultPayload)
    assert denied.is_error
    assert not allowed.is_error
    assert "." in allowed.output.split()
    assert not target.exists()


async def test_allowed_commands_apply_to_their_turn_only(tmp_path: Path) -> None:
    """Rules are per session and set again on every turn: a resumed turn without
    ``allowed_commands`` runs commands again."""
    first, second = tmp_path / "work" / "first.txt", tmp_path / "work" / "second.txt"
    scenario = Scenario(
        turns=[
            [shell("opencode", f"touch {first}")],
            [Text("Refused.")],
            [shell("opencode", f"touch {second}")],
            [Text("Done.")],
        ]
    )
    async with rig(tmp_path, scenario) as r:
        _, one = await r.run(r.request("touch one", allowed_commands=("ls",)))
        _, two = await r.run(r.request("touch two", session_id=one.session_id))
    assert (one.status, two.status) == (ResultStatus.SUCCESS, ResultStatus.SUCCESS)
    assert not first.exists()
    assert second.exists()


async def test_a_server_that_dies_mid_turn_ends_it_with_an_error(tmp_path: Path) -> None:
    scenario = Scenario(turns=[[Text("working", chunk_size=0), Stall()], [Text("Back.")]])
    async with rig(tmp_path, scenario) as r:
        request = r.request("work", idle_timeout_s=60)

        async def kill_server(event: AgentEvent) -> None:
            if isinstance(event.payload, MessagePayload) and event.payload.delta:
                server = r.agent.server
                assert server is not None
                await server.handle.signal_group(9)

        _, result = await r.run(request, kill_server)
        _, after = await r.run(r.request("are you back?", session_id=result.session_id))
    assert (result.status, result.terminal_reason) == (ResultStatus.ERROR, "server_lost")
    assert "exited with code 137" in (result.error or "")
    assert (after.status, after.text) == (ResultStatus.SUCCESS, "Back."), "a new server resumes"


async def test_a_missing_binary_is_an_error_result(tmp_path: Path) -> None:
    async with ModelServer(Scenario.text("unused")) as model:
        agent = OpencodeCodeAgent(
            LocalProcessLauncher(),
            tmp_path / "home",
            config=OpencodeConfig(binary=str(tmp_path / "no-such-opencode")),
        )
        request = AgentRequest(provider="opencode", prompt="hi", base_url=model.base_url)
        with anyio.fail_after(RUN_DEADLINE_S):
            events = [e async for e in agent.execute(request)]
        await agent.aclose()
    result = assert_well_formed_run(events, request).payload
    assert result.type == "result"
    assert result.result.status is ResultStatus.ERROR
    assert result.result.terminal_reason == "executable_not_found"


# --- event stream reconnect ----------------------------------------------------------------


class EventRelay:
    """A TCP relay to the server that, on the first ``GET /event`` connection, cuts the
    stream after forwarding a chunk containing ``cut_after``; the next ``/event``
    request is held back ``hold_s`` before it reaches the server."""

    def __init__(self, upstream_port: int, cut_after: bytes, hold_s: float) -> None:
        self.upstream_port, self.cut_after, self.hold_s = upstream_port, cut_after, hold_s
        self.event_requests = 0

    async def serve(self, listener: anyio.abc.Listener[anyio.abc.SocketStream]) -> None:
        await listener.serve(self._relay)

    async def _relay(self, client: anyio.abc.SocketStream) -> None:
        try:
            server = await anyio.connect_tcp("127.0.0.1", self.upstream_port)
        except OSError:
            await client.aclose()  # the server is not listening yet (health polls)
            return
        async with client, server:
            stream_no: list[int] = []
            async with anyio.create_task_group() as tg:

                async def upstream() -> None:
                    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                        await pump_up()
                    tg.cancel_scope.cancel()

                async def pump_up() -> None:
                    async for chunk in client:
                        if chunk.startswith(b"GET /event"):
                            self.event_requests += 1
                            stream_no.append(self.event_requests)
                            if self.event_requests == 2:
                                await anyio.sleep(self.hold_s)
                        await server.send(chunk)

                async def downstream() -> None:
                    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                        async for chunk in server:
                            await client.send(chunk)
                            if stream_no == [1] and self.cut_after in chunk:
                                break  # the connection drops mid-stream
                    tg.cancel_scope.cancel()

                tg.start_soon(upstream)
                tg.start_soon(downstream)


@pytest.mark.parametrize("hold_s", [0.0, 3.0], ids=["reconnect-mid-turn", "idle-missed"])
async def test_a_dropped_event_stream_is_reopened_and_reconciled(
    tmp_path: Path, hold_s: float
) -> None:
    scenario = Scenario(turns=[[Text("part one. ", chunk_size=0), Delay(1.5), Text("part two.")]])
    server_port = free_port()
    async with anyio.create_task_group() as tg:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        relay_port = listener.extra(anyio.abc.SocketAttribute.local_port)
        relay = EventRelay(server_port, b"part one", hold_s)
        tg.start_soon(relay.serve, listener)
        async with rig(tmp_path, scenario, port=server_port, connect_port=relay_port) as r:
            events, result = await r.run(r.request("two parts"))
        tg.cancel_scope.cancel()
    assert relay.event_requests == 2, "the stream was reopened once"
    assert (result.status, result.text) == (ResultStatus.SUCCESS, "part one. part two.")
    full = [p.text for p in payloads(events, MessagePayload) if not p.delta and p.role != "user"]
    assert full == ["part one. part two."], "replayed and streamed parts are emitted once"


# --- inside a container (docker exec) ------------------------------------------------------

CLI_DIR = "/opt/opencode"


@dataclass(frozen=True)
class Box:
    container: Any
    binary: str
    address: str
    home: Path
    workspace: Path


@pytest.fixture
def box(docker_client: docker.DockerClient, test_image: str, tmp_path: Path) -> Iterator[Box]:
    """A worker-like busybox container: host glibc and the binary mounted read-only, HOME
    and the workspace mounted from the host."""
    binary = Path(opencode_binary()).resolve()
    with busybox_worker(docker_client, test_image, tmp_path, binary, CLI_DIR) as worker:
        worker.container.reload()
        address = worker.container.attrs["NetworkSettings"]["IPAddress"]
        yield Box(worker.container, worker.binary, address, worker.home, worker.workspace)


async def test_a_server_inside_a_worker_container(
    docker_client: docker.DockerClient, box: Box
) -> None:
    """``opencode serve`` started by ``docker exec`` in the container binds all its
    interfaces; codeyard reaches it at the container's address, the model server is
    reached over the default bridge. A write-tool turn, a resumed turn, then ``aclose``
    leaves no opencode process in the container."""
    scenario = Scenario(
        turns=[
            [Text("Writing."), write_file("opencode", f"{WORKSPACE}/hi.txt", "from a box\n")],
            [Text("Done in the box.")],
            [Text("Still the same session.")],
        ]
    )
    async with ModelServer(scenario, host="0.0.0.0") as model:
        config = OpencodeConfig(
            binary=box.binary,
            path="/bin:/usr/bin",
            base_url=model.bridge_base_url(),
            model="mock-model",
            listen_host="0.0.0.0",
            connect_host=box.address,
            port=4096,
        )
        launcher = DockerExecLauncher(docker_client, str(box.container.id))
        home = PurePosixPath(HOME)
        agent = OpencodeCodeAgent(launcher, box.home, config=config, cli_home=home)
        r = Rig(agent, model, box.workspace, model.bridge_base_url())
        try:
            events, first = await r.run(r.request("write hi.txt", workdir=WORKSPACE))
            again = r.request("again", workdir=WORKSPACE, session_id=first.session_id)
            _, second = await r.run(again)
        finally:
            await agent.aclose()
    top = box.container.top(ps_args="-o pid,stat,args")
    left = [p for p in top["Processes"] if "opencode" in " ".join(p) and "Z" not in p[1]]
    assert (first.status, first.text) == (ResultStatus.SUCCESS, "Done in the box."), first
    assert (box.workspace / "hi.txt").read_text() == "from a box\n"
    [init] = payloads(events, InitPayload)
    assert init.cwd == WORKSPACE
    assert (second.status, second.session_id) == (ResultStatus.SUCCESS, first.session_id)
    assert (box.home / ".config" / "opencode" / "opencode.json").exists()
    assert left == [], "aclose() stops the server inside the container"
