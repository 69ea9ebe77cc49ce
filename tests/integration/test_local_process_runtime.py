"""LocalProcessRuntime beyond the shared contract: what "no isolation" still guarantees."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from codeyard.adapters.process.runtime import LABEL_ISOLATION, LocalProcessRuntime
from codeyard.domain.container import LABEL_OWNER, ContainerSpec, ExitReason
from codeyard.domain.errors import RuntimeNotAvailable
from codeyard.domain.worker import NetworkPolicy

pytestmark = pytest.mark.anyio


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[LocalProcessRuntime]:
    owner = f"test-{uuid.uuid4().hex[:12]}"
    rt = LocalProcessRuntime(owner=owner, base_dir=str(tmp_path))
    try:
        yield rt
    finally:
        for info in await rt.list({LABEL_OWNER: owner}):
            await rt.remove(info.id)
        assert await anyio.to_thread.run_sync(os.listdir, tmp_path) == []  # dirs removed


def spec(*command: str, **kwargs: Any) -> ContainerSpec:
    return ContainerSpec(image="host", command=command or ("sleep", "300"), **kwargs)


async def test_labelled_without_isolation_and_works_in_its_own_dir(
    runtime: LocalProcessRuntime, tmp_path: Path
) -> None:
    info = await runtime.create(spec())
    assert info.labels[LABEL_ISOLATION] == "none"
    await runtime.start(info.id)
    where = await runtime.exec(info.id, ["sh", "-c", 'pwd; echo "$HOME"'])
    cwd, home = where.stdout.split()
    assert cwd == home
    assert Path(cwd).parent.parent == tmp_path


async def test_stop_reports_stopped_and_kills_the_group(runtime: LocalProcessRuntime) -> None:
    # The main shell ignores SIGTERM and has a background child: both must die.
    info = await runtime.create(spec("sh", "-c", "trap '' TERM; sleep 300 & echo $!; wait"))
    await runtime.start(info.id)
    child = int(await _first_line(runtime, info.id))
    began = time.monotonic()
    await runtime.stop(info.id, timeout_s=0.5)
    assert time.monotonic() - began < 5
    stopped = await runtime.inspect(info.id)
    assert (stopped.exit_code, stopped.reason) == (137, ExitReason.STOPPED)
    await _gone(child)


async def test_main_exit_ends_the_rest_of_the_group(runtime: LocalProcessRuntime) -> None:
    info = await runtime.create(spec("sh", "-c", "sleep 300 & echo $!"))
    await runtime.start(info.id)
    assert await runtime.wait(info.id, timeout_s=10) == 0
    assert (await runtime.inspect(info.id)).reason is ExitReason.EXITED
    child = int((await runtime.logs(info.id)).strip())
    await _gone(child)


async def test_network_none_is_a_namespace_of_its_own(runtime: LocalProcessRuntime) -> None:
    if os.geteuid() != 0:
        with pytest.raises(RuntimeNotAvailable):
            await runtime.create(spec(network=NetworkPolicy.NONE))
        return
    info = await runtime.create(spec(network=NetworkPolicy.NONE))
    await runtime.start(info.id)
    devices = await runtime.exec(info.id, ["cat", "/proc/net/dev"])
    names = [line.split(":")[0].strip() for line in devices.stdout.splitlines()[2:]]
    assert names == ["lo"]
    host = (await anyio.Path("/proc/net/dev").read_text()).splitlines()[2:]
    assert len(host) > 1  # the host has more than loopback: the check means something


async def test_exec_cancelled_kills_its_process(runtime: LocalProcessRuntime) -> None:
    info = await runtime.create(spec())
    await runtime.start(info.id)
    marker = uuid.uuid4().hex
    with anyio.move_on_after(0.5):
        await runtime.exec(info.id, ["sh", "-c", f"sleep 300; echo {marker}"])
    assert await anyio.to_thread.run_sync(_running_with, marker) == []


async def _first_line(runtime: LocalProcessRuntime, container_id: str) -> str:
    with anyio.fail_after(10):
        for _ in range(1000):  # polling: nothing signals a write to the log file
            if text := (await runtime.logs(container_id)).strip():
                return text
            await anyio.sleep(0.01)
    raise AssertionError("no output")


async def _gone(pid: int) -> None:
    """Wait until ``pid`` is dead (gone, or a zombie its parent has yet to reap)."""
    with anyio.fail_after(5):
        for _ in range(500):
            if await anyio.to_thread.run_sync(_state, pid) in ("", "Z", "X"):
                return
            await anyio.sleep(0.01)
    raise AssertionError(f"process {pid} is still alive")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return ""


def _running_with(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline and _state(int(entry.name)) not in ("", "Z", "X"):
                found.append(int(entry.name))
    return found


async def test_workspace_is_a_git_worktree_of_the_repo(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    await anyio.Path(repo).mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    await anyio.run_process(["git", "init", "-q", str(repo)])
    await anyio.Path(repo / "README").write_text("hello worktree\n")
    await anyio.run_process([*git, "add", "README"])
    await anyio.run_process([*git, "commit", "-q", "-m", "first"])
    rt = LocalProcessRuntime(owner="t", base_dir=str(tmp_path), repo=str(repo))
    info = await rt.create(spec())
    await rt.start(info.id)
    read = await rt.exec(info.id, ["cat", "README"])
    assert (read.exit_code, read.stdout) == (0, "hello worktree\n")
    listed = await anyio.run_process([*git, "worktree", "list"])
    assert len(listed.stdout.splitlines()) == 2
    await rt.remove(info.id)
    listed = await anyio.run_process([*git, "worktree", "list"])
    assert len(listed.stdout.splitlines()) == 1
    assert await anyio.to_thread.run_sync(os.listdir, tmp_path) == ["repo"]
