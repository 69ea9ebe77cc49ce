"""The ContainerRuntime contract (codeyard.ports.container_runtime), one suite per adapter.

The ``runtime`` fixture is parametrized: ``memory`` (a bookkeeping fake that runs nothing),
``process`` (real local processes, no isolation: the commands run on this machine) and
``docker`` (the real engine, with the local busybox test image). Each test gets a
runtime whose owner label is unique to it; teardown removes every container carrying it.
Commands stay within what the fake interprets (see ``codeyard.adapters.memory._shell``).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import docker
import pytest

from codeyard.adapters.docker.container_runtime import DockerContainerRuntime
from codeyard.adapters.memory.container_runtime import InMemoryContainerRuntime
from codeyard.adapters.process.runtime import LocalProcessRuntime
from codeyard.domain.container import (
    LABEL_CREATED,
    LABEL_OWNER,
    ContainerSpec,
    ContainerState,
    ExitReason,
)
from codeyard.domain.errors import (
    AlreadyExists,
    Conflict,
    ContainerNotFound,
    ImageNotFound,
    InvalidRequest,
    RuntimeNotAvailable,
)
from codeyard.domain.worker import NetworkPolicy
from codeyard.ports.container_runtime import ContainerRuntime
from tests import services

pytestmark = pytest.mark.anyio

LABEL_TEST = "dev.codeyard.test-label"


@pytest.fixture
def owner() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["memory", "process", pytest.param("docker", marks=pytest.mark.docker)])
async def runtime(request: pytest.FixtureRequest, owner: str) -> AsyncIterator[ContainerRuntime]:
    rt: ContainerRuntime
    client: docker.DockerClient | None = None
    if request.param == "memory":
        rt = InMemoryContainerRuntime(owner=owner, images={services.TEST_IMAGE_TAG})
    elif request.param == "process":
        rt = LocalProcessRuntime(owner=owner, images={services.TEST_IMAGE_TAG})
    else:
        client = request.getfixturevalue("docker_client")
        request.getfixturevalue("test_image")
        rt = DockerContainerRuntime(client, owner=owner)
    assert isinstance(rt, ContainerRuntime)
    try:
        yield rt
    finally:
        with anyio.fail_after(60):
            for info in await rt.list({LABEL_OWNER: owner}):
                await rt.remove(info.id)
        if client is not None:  # belt and braces: nothing may outlive the test
            leftovers = client.containers.list(
                all=True, filters={"label": f"{LABEL_OWNER}={owner}"}, sparse=True
            )
            for c in leftovers:
                c.remove(force=True)
            assert not leftovers, "runtime.list/remove left containers behind"


def spec(**kwargs: Any) -> ContainerSpec:
    """A spec on the test image; callers override what they need."""
    return ContainerSpec(image=services.TEST_IMAGE_TAG, **kwargs)


async def running(rt: ContainerRuntime, *command: str, **kwargs: Any) -> str:
    """Create and start a container running ``command`` (default: sleep 300)."""
    info = await rt.create(spec(command=command or ("sleep", "300"), **kwargs))
    await rt.start(info.id)
    return info.id


def unknown_id() -> str:
    return secrets.token_hex(32)


# --- create / inspect -----------------------------------------------------------------------


async def test_create_does_not_start_and_keeps_labels(runtime: ContainerRuntime) -> None:
    labels = {LABEL_TEST: uuid.uuid4().hex, "team": "yard"}
    created = await runtime.create(spec(command=("sleep", "300"), labels=labels))
    assert created.state is ContainerState.CREATED
    assert created.exit_code is None
    assert created.started_at is None
    assert created.finished_at is None
    assert created.image == services.TEST_IMAGE_TAG

    info = await runtime.inspect(created.id)
    assert info.id == created.id
    assert info.state is ContainerState.CREATED
    assert labels.items() <= info.labels.items()
    assert LABEL_OWNER in info.labels
    assert LABEL_CREATED in info.labels


async def test_named_container_can_be_inspected_by_id_and_name_is_unique(
    runtime: ContainerRuntime,
) -> None:
    name = f"cy-{uuid.uuid4().hex[:12]}"
    info = await runtime.create(spec(name=name))
    assert info.name == name
    assert (await runtime.inspect(info.id)).name == name
    with pytest.raises(AlreadyExists):
        await runtime.create(spec(name=name))


async def test_spec_naming_another_owner_is_refused(runtime: ContainerRuntime) -> None:
    with pytest.raises(InvalidRequest):
        await runtime.create(spec(labels={LABEL_OWNER: "someone-else"}))


async def test_unknown_image_raises_image_not_found(runtime: ContainerRuntime) -> None:
    with pytest.raises(ImageNotFound):
        await runtime.create(spec().model_copy(update={"image": "codeyard-test/missing:nope"}))


async def test_unknown_runtime_raises_runtime_not_available(runtime: ContainerRuntime) -> None:
    with pytest.raises(RuntimeNotAvailable):
        await runtime.create(spec(runtime="no-such-runtime"))


# --- exec -----------------------------------------------------------------------------------


async def test_exec_echo_returns_stdout_and_exit_code(runtime: ContainerRuntime) -> None:
    cid = await running(runtime)
    result = await runtime.exec(cid, ["echo", "hello", "yard"])
    assert result.exit_code == 0
    assert result.stdout == "hello yard\n"
    assert result.stderr == ""


async def test_exec_nonzero_exit_code(runtime: ContainerRuntime) -> None:
    cid = await running(runtime)
    assert (await runtime.exec(cid, ["sh", "-c", "exit 7"])).exit_code == 7
    failed = await runtime.exec(cid, ["cat", "/no/such/file"])
    assert failed.exit_code == 1
    assert "No such file" in failed.stderr


async def test_exec_writes_a_file_that_cat_reads(runtime: ContainerRuntime) -> None:
    cid = await running(runtime)
    wrote = await runtime.exec(cid, ["sh", "-c", "echo persisted > /tmp/note"])
    assert wrote.exit_code == 0
    result = await runtime.exec(cid, ["cat", "/tmp/note"])
    assert (result.exit_code, result.stdout) == (0, "persisted\n")


async def test_exec_env_and_workdir(runtime: ContainerRuntime) -> None:
    cid = await running(runtime, env={"FROM_SPEC": "a"})
    result = await runtime.exec(cid, ["env"], env={"FROM_EXEC": "b"})
    assert result.exit_code == 0
    assert {"FROM_SPEC=a", "FROM_EXEC=b"} <= set(result.stdout.splitlines())
    assert (await runtime.exec(cid, ["pwd"], workdir="/tmp")).stdout == "/tmp\n"


async def test_exec_unknown_program_reports_not_found(runtime: ContainerRuntime) -> None:
    cid = await running(runtime)
    via_shell = await runtime.exec(cid, ["sh", "-c", "no-such-program"])
    assert via_shell.exit_code == 127
    assert "not found" in via_shell.stderr
    direct = await runtime.exec(cid, ["no-such-program"])
    # Docker reports 126 (with the message on stdout), a shell 127: both mean "not found".
    assert direct.exit_code in (126, 127)
    assert "not found" in direct.stdout + direct.stderr


async def test_exec_in_a_container_that_is_not_running_conflicts(
    runtime: ContainerRuntime,
) -> None:
    info = await runtime.create(spec(command=("sleep", "300")))
    with pytest.raises(Conflict):
        await runtime.exec(info.id, ["echo", "hi"])


# --- wait / logs / stop ---------------------------------------------------------------------


async def test_wait_returns_the_main_process_exit_code(runtime: ContainerRuntime) -> None:
    cid = await running(runtime, "sh", "-c", "exit 3")
    assert await runtime.wait(cid, timeout_s=30) == 3
    info = await runtime.inspect(cid)
    assert info.state is ContainerState.EXITED
    assert info.exit_code == 3
    assert info.oom_killed is False
    assert info.reason is ExitReason.EXITED
    assert info.ip is None
    assert info.started_at is not None
    assert info.finished_at is not None
    assert info.started_at <= info.finished_at


async def test_wait_timeout_raises_and_leaves_the_container_running(
    runtime: ContainerRuntime,
) -> None:
    cid = await running(runtime)
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        await runtime.wait(cid, timeout_s=0.5)
    assert time.monotonic() - began < 10
    assert (await runtime.inspect(cid)).state is ContainerState.RUNNING
    assert (await runtime.inspect(cid)).reason is None


async def test_wait_sees_a_sleep_end(runtime: ContainerRuntime) -> None:
    cid = await running(runtime, "sleep", "1")
    assert await runtime.wait(cid, timeout_s=30) == 0


async def test_logs_contain_the_main_process_output(runtime: ContainerRuntime) -> None:
    cid = await running(runtime, "echo", "hello-from-main")
    assert await runtime.wait(cid, timeout_s=30) == 0
    assert "hello-from-main" in await runtime.logs(cid)
    assert (await runtime.logs(cid, tail=1)).strip() == "hello-from-main"


async def test_stop_ends_a_long_running_container_within_the_timeout(
    runtime: ContainerRuntime,
) -> None:
    cid = await running(runtime)
    info = await runtime.inspect(cid)
    assert info.state is ContainerState.RUNNING
    assert info.started_at is not None
    began = time.monotonic()
    await runtime.stop(cid, timeout_s=1)
    assert time.monotonic() - began < 8
    stopped = await runtime.inspect(cid)
    assert stopped.state is ContainerState.EXITED
    assert stopped.exit_code in (137, 143)  # SIGKILL (a PID 1 ignoring SIGTERM) or SIGTERM
    assert stopped.reason is ExitReason.STOPPED
    # Both are no-ops now.
    await runtime.stop(cid, timeout_s=1)
    assert await runtime.wait(cid, timeout_s=5) == stopped.exit_code


async def test_stop_does_not_wait_out_the_timeout_when_sigterm_works(
    runtime: ContainerRuntime,
) -> None:
    # Under Docker this needs the init (tini): a bare `sleep` as PID 1 ignores SIGTERM.
    cid = await running(runtime)
    began = time.monotonic()
    await runtime.stop(cid, timeout_s=10)
    assert time.monotonic() - began < 5
    assert (await runtime.inspect(cid)).exit_code == 143


async def test_a_missing_main_program_exits_127(runtime: ContainerRuntime) -> None:
    cid = await running(runtime, "no-such-program")
    assert await runtime.wait(cid, timeout_s=30) == 127
    assert (await runtime.inspect(cid)).state is ContainerState.EXITED


async def test_start_is_a_no_op_on_a_running_container(runtime: ContainerRuntime) -> None:
    cid = await running(runtime)
    await runtime.start(cid)
    assert (await runtime.inspect(cid)).state is ContainerState.RUNNING


async def test_network_policy_decides_whether_there_is_an_ip(runtime: ContainerRuntime) -> None:
    bridged = await running(runtime, network=NetworkPolicy.EGRESS)
    isolated = await running(runtime, network=NetworkPolicy.NONE)
    assert (await runtime.inspect(bridged)).ip
    assert (await runtime.inspect(isolated)).ip is None


# --- list / remove --------------------------------------------------------------------------


async def test_list_filters_by_label_oldest_first(runtime: ContainerRuntime, owner: str) -> None:
    mine, other = uuid.uuid4().hex, uuid.uuid4().hex
    first = await runtime.create(spec(labels={LABEL_TEST: mine}))
    second = await runtime.create(
        spec(command=("sleep", "300"), labels={LABEL_TEST: mine, "role": "b"})
    )
    await runtime.start(second.id)
    third = await runtime.create(spec(labels={LABEL_TEST: other}))

    found = await runtime.list({LABEL_TEST: mine})
    assert [i.id for i in found] == [first.id, second.id]
    assert [i.state for i in found] == [ContainerState.CREATED, ContainerState.RUNNING]
    assert found[1].labels["role"] == "b"
    assert [i.id for i in await runtime.list({LABEL_TEST: mine, "role": "b"})] == [second.id]
    assert [i.id for i in await runtime.list({LABEL_TEST: other})] == [third.id]
    everything = [i.id for i in await runtime.list({LABEL_OWNER: owner})]
    assert everything == [first.id, second.id, third.id]
    assert await runtime.list({LABEL_TEST: uuid.uuid4().hex}) == []


async def test_list_agrees_with_inspect(runtime: ContainerRuntime) -> None:
    label = {LABEL_TEST: uuid.uuid4().hex}
    await runtime.create(spec(labels=label))
    await running(runtime, labels=label)
    exited = await running(runtime, "sh", "-c", "exit 4", labels=label)
    await runtime.wait(exited, timeout_s=30)
    listed = await runtime.list(label)
    assert len(listed) == 3
    for info in listed:
        assert info == await runtime.inspect(info.id)


async def test_remove_is_idempotent(runtime: ContainerRuntime) -> None:
    label = {LABEL_TEST: uuid.uuid4().hex}
    cid = await running(runtime, labels=label)
    await runtime.remove(cid)
    await runtime.remove(cid)
    await runtime.remove(unknown_id())
    assert await runtime.list(label) == []
    with pytest.raises(ContainerNotFound):
        await runtime.inspect(cid)


async def test_remove_without_force_refuses_a_running_container(
    runtime: ContainerRuntime,
) -> None:
    cid = await running(runtime)
    with pytest.raises(Conflict):
        await runtime.remove(cid, force=False)
    await runtime.stop(cid, timeout_s=1)
    await runtime.remove(cid, force=False)
    with pytest.raises(ContainerNotFound):
        await runtime.inspect(cid)


@pytest.mark.parametrize("operation", ["inspect", "start", "exec", "wait", "logs", "stop"])
async def test_unknown_id_raises_container_not_found(
    runtime: ContainerRuntime, operation: str
) -> None:
    cid = unknown_id()
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "inspect": lambda: runtime.inspect(cid),
        "start": lambda: runtime.start(cid),
        "exec": lambda: runtime.exec(cid, ["echo"]),
        "wait": lambda: runtime.wait(cid, timeout_s=5),
        "logs": lambda: runtime.logs(cid),
        "stop": lambda: runtime.stop(cid, timeout_s=1),
    }
    with pytest.raises(ContainerNotFound):
        await calls[operation]()
