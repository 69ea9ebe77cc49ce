"""The ProcessLauncher contract (codeyard.ports.process_launcher), one suite for every
adapter: ``local`` (subprocesses of this test process) and ``docker`` (``docker exec`` in a
busybox container started for the session, with ``--init`` so orphans are reaped).

Each subject also says how to tell, from outside, whether a process group or pid still
exists: ``os.killpg(pgid, 0)`` locally, ``kill -0`` in the container.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import docker
import docker.errors
import pytest

from codeyard.adapters.cli import CliCodeAgent, ProviderSpec
from codeyard.adapters.docker import DockerExecLauncher
from codeyard.adapters.process import LocalProcessLauncher
from codeyard.domain.errors import ExecutableNotFound, InvalidInput, NotFound
from codeyard.ports.code_agent import CodeAgent
from codeyard.ports.process_launcher import ProcessHandle, ProcessLauncher

pytestmark = pytest.mark.anyio

if TYPE_CHECKING:

    def _static_conformance(client: docker.DockerClient, spec: ProviderSpec) -> None:
        # mypy --strict fails here if an adapter drifts from its port.
        launchers: list[ProcessLauncher] = [
            LocalProcessLauncher(),
            DockerExecLauncher(client, "container"),
        ]
        agent: CodeAgent = CliCodeAgent(spec, launchers[0], Path("/tmp/home"))
        del launchers, agent


#: Upper bound for anything that should be quick; a hung launcher fails instead of hanging.
DEADLINE_S = 20.0


@dataclass(frozen=True)
class Subject:
    launcher: ProcessLauncher
    path: str
    #: Whether anything of process group ``pgid`` / process ``pid`` still exists.
    group_exists: Callable[[int], Awaitable[bool]]
    pid_exists: Callable[[int], Awaitable[bool]]

    async def start(
        self, *argv: str, env: dict[str, str] | None = None, cwd: str | None = None
    ) -> ProcessHandle:
        return await self.launcher.start(argv, env=env or {"PATH": self.path}, cwd=cwd)


def pgid_of(handle: ProcessHandle) -> int:
    pgid = getattr(handle, "pgid", None)
    assert isinstance(pgid, int), "both launchers expose the group id as .pgid"
    return pgid


# --- subjects ------------------------------------------------------------------------------


def _local_exists(kill: Callable[[int, int], None]) -> Callable[[int], Awaitable[bool]]:
    async def exists(ident: int) -> bool:
        try:
            kill(ident, 0)
        except ProcessLookupError:
            return False
        return True

    return exists


@pytest.fixture(scope="module")
def busybox_container(docker_client: docker.DockerClient, test_image: str) -> Iterator[str]:
    container = docker_client.containers.run(
        test_image, ["sleep", "3600"], detach=True, init=True, labels={"dev.codeyard.test": "1"}
    )
    try:
        yield str(container.id)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


def _docker_subject(client: docker.DockerClient, container_id: str) -> Subject:
    launcher = DockerExecLauncher(client, container_id, limiter=anyio.CapacityLimiter(8))

    def exists(target: str) -> Callable[[int], Awaitable[bool]]:
        async def check(ident: int) -> bool:
            def run() -> int:
                ident_arg = f"-{ident}" if target == "group" else str(ident)
                result = client.api.exec_create(container_id, ["kill", "-0", ident_arg])
                client.api.exec_start(result["Id"])
                code: int = client.api.exec_inspect(result["Id"])["ExitCode"]
                return code

            return await anyio.to_thread.run_sync(run) == 0

        return check

    return Subject(launcher, "/bin:/usr/bin", exists("group"), exists("pid"))


@pytest.fixture(params=["local", "docker"])
def subject(request: pytest.FixtureRequest) -> Subject:
    if request.param == "local":
        return Subject(
            # Adopting orphans makes "the group is gone" observable even where PID 1 does
            # not reap (this sandbox): aclose then reaps the killed members itself.
            LocalProcessLauncher(adopt_orphans=True),
            os.environ.get("PATH", "/usr/bin:/bin"),
            _local_exists(os.killpg),
            _local_exists(os.kill),
        )
    client = request.getfixturevalue("docker_client")
    return _docker_subject(client, request.getfixturevalue("busybox_container"))


async def read_all(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def outputs(handle: ProcessHandle) -> tuple[bytes, bytes]:
    out, err = b"", b""

    async def stdout() -> None:
        nonlocal out
        out = await read_all(handle.stdout_chunks())

    async def stderr() -> None:
        nonlocal err
        err = await read_all(handle.stderr_chunks())

    async with anyio.create_task_group() as tg:
        tg.start_soon(stdout)
        tg.start_soon(stderr)
    return out, err


async def first_line(chunks: AsyncIterator[bytes]) -> bytes:
    data = b""
    async for chunk in chunks:
        data += chunk
        if b"\n" in data:
            break
    return data.split(b"\n", 1)[0]


# --- the contract --------------------------------------------------------------------------


async def test_implements_the_port(subject: Subject) -> None:
    assert isinstance(subject.launcher, ProcessLauncher)
    with anyio.fail_after(DEADLINE_S):
        handle = await subject.start("true")
        try:
            assert isinstance(handle, ProcessHandle)
            assert await handle.wait() == 0
        finally:
            await handle.aclose()


async def test_output_stdout_and_stderr_arrive_separately(subject: Subject) -> None:
    with anyio.fail_after(DEADLINE_S):
        handle = await subject.start("sh", "-c", "echo hello; echo oops >&2; echo world")
        try:
            out, err = await outputs(handle)
            assert out == b"hello\nworld\n"
            assert err == b"oops\n"
            assert await handle.wait() == 0
            assert handle.returncode == 0
        finally:
            await handle.aclose()


@pytest.mark.parametrize(("script", "code"), [("exit 0", 0), ("exit 3", 3), ("exit 255", 255)])
async def test_exit_codes(subject: Subject, script: str, code: int) -> None:
    with anyio.fail_after(DEADLINE_S):
        handle = await subject.start("sh", "-c", script)
        try:
            assert await handle.wait() == code
            assert await handle.wait() == code  # stable
        finally:
            await handle.aclose()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
async def test_death_by_a_group_signal_is_128_plus_n(subject: Subject, signum: int) -> None:
    with anyio.fail_after(DEADLINE_S):
        handle = await subject.start("sh", "-c", "echo ready; exec sleep 300")
        try:
            assert await first_line(handle.stdout_chunks()) == b"ready"
            await handle.signal_group(signum)
            assert await handle.wait() == 128 + signum
        finally:
            await handle.aclose()


async def test_env_is_exactly_the_given_one(subject: Subject) -> None:
    env = {"PATH": subject.path, "CODEYARD_PROBE": "a b=c", "EMPTY": ""}
    with anyio.fail_after(DEADLINE_S):
        handle = await subject.start("env", env=env)
        try:
            out, _ = await outputs(handle)
        finally:
            await handle.aclose()
    seen = dict(line.split("=", 1) for line in out.decode().splitlines())
    # A launcher may add its one tracking variable (a unique marker per process).
    marker = seen.pop("CODEYARD_PROCESS_MARKER", None)
    assert marker is None or len(marker) == 32
    assert seen == env  # nothing inherited: no HOME, no HOSTNAME, no parent variables


async def test_cwd(subject: Subject) -> None:
    with anyio.fail_after(DEADLINE_S):
        handle = await subject.start("pwd", cwd="/")
        try:
            out, _ = await outputs(handle)
        finally:
            await handle.aclose()
    assert out == b"/\n"


async def test_stdin_is_closed(subject: Subject) -> None:
    with anyio.fail_after(DEADLINE_S):  # a process reading stdin must see EOF, not hang
        handle = await subject.start("sh", "-c", "cat; echo done")
        try:
            out, _ = await outputs(handle)
            assert out == b"done\n"
            assert await handle.wait() == 0
        finally:
            await handle.aclose()


async def test_signal_group_reaches_a_grandchild(subject: Subject) -> None:
    with anyio.fail_after(DEADLINE_S):
        handle = await subject.start("sh", "-c", "sleep 300 & echo $!; wait")
        try:
            grandchild = int(await first_line(handle.stdout_chunks()))
            pgid = pgid_of(handle)
            assert await subject.pid_exists(grandchild)
            await handle.signal_group(signal.SIGTERM)
            assert await handle.wait() == 128 + signal.SIGTERM
        finally:
            await handle.aclose()
        assert not await subject.pid_exists(grandchild)
        assert not await subject.group_exists(pgid)


async def test_wait_returns_when_the_leader_exits_even_if_a_child_holds_the_pipes(
    subject: Subject,
) -> None:
    with anyio.fail_after(DEADLINE_S):
        handle = await subject.start("sh", "-c", "sleep 300 & exit 5")
        try:
            with anyio.fail_after(5):
                assert await handle.wait() == 5
            assert await subject.group_exists(pgid_of(handle))  # the sleep lives on
        finally:
            await handle.aclose()
        assert not await subject.group_exists(pgid_of(handle))


async def test_aclose_kills_leftovers_and_is_idempotent(subject: Subject) -> None:
    with anyio.fail_after(DEADLINE_S):
        handle = await subject.start("sh", "-c", "sleep 300 & sleep 300 & echo up; wait")
        assert await first_line(handle.stdout_chunks()) == b"up"
        pgid = pgid_of(handle)
        await handle.aclose()
        await handle.aclose()
        assert handle.returncode == 128 + signal.SIGKILL
        assert not await subject.group_exists(pgid)
        await handle.signal_group(signal.SIGTERM)  # on a finished process: a no-op


async def test_aclose_also_kills_a_descendant_in_a_session_of_its_own(subject: Subject) -> None:
    # Like Claude Code's Bash tool: started under setsid, so killpg alone misses it.
    with anyio.fail_after(DEADLINE_S):
        # The pid is printed from inside the new session, so setsid has happened by then.
        script = "setsid sh -c 'echo $$; exec sleep 300' & wait"
        handle = await subject.start("sh", "-c", script)
        escaped = int(await first_line(handle.stdout_chunks()))
        assert await subject.pid_exists(escaped)
        assert escaped != pgid_of(handle)
        assert await subject.group_exists(escaped)  # it leads a group of its own
        await handle.aclose()
        assert not await subject.pid_exists(escaped)
        assert not await subject.group_exists(pgid_of(handle))


async def test_signal_after_exit_is_a_noop(subject: Subject) -> None:
    with anyio.fail_after(DEADLINE_S):
        handle = await subject.start("true")
        try:
            assert await handle.wait() == 0
            await handle.signal_group(signal.SIGTERM)
            assert await handle.wait() == 0
        finally:
            await handle.aclose()


async def test_a_cancelled_read_loses_nothing(subject: Subject) -> None:
    """The run loop races reads of both pipes and cancels the loser: it must be safe."""
    with anyio.fail_after(DEADLINE_S):
        handle = await subject.start("sh", "-c", "sleep 0.5; echo late")
        try:
            chunks = handle.stdout_chunks()
            with anyio.move_on_after(0.05) as scope:
                await chunks.__anext__()
            assert scope.cancelled_caught
            assert await read_all(chunks) == b"late\n"
        finally:
            await handle.aclose()


async def test_a_missing_executable_is_not_found(subject: Subject) -> None:
    with anyio.fail_after(DEADLINE_S):
        for argv0 in ("codeyard-no-such-binary", "/nonexistent/codeyard-no-such-binary"):
            with pytest.raises(ExecutableNotFound) as info:
                await subject.start(argv0)
            assert isinstance(info.value, NotFound)


async def test_a_missing_cwd_is_not_found(subject: Subject) -> None:
    with anyio.fail_after(DEADLINE_S), pytest.raises(NotFound):
        await subject.start("true", cwd="/nonexistent-codeyard-dir")


async def test_empty_argv_is_invalid(subject: Subject) -> None:
    with pytest.raises(InvalidInput):
        await subject.launcher.start([], env={"PATH": subject.path})
