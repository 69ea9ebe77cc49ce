"""Runtime choice, init, Docker-in-Docker and exit reasons against the real engine.

gVisor: ``scripts/dev setup`` registers Debian's ``runsc`` (with ``--network=none``); where
it is not registered the runsc tests skip, and FAIL in CI (``tests.services``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import docker
import docker.errors
import pytest

from codeyard.adapters.docker.container_runtime import DockerContainerRuntime
from codeyard.adapters.docker.runtimes import DIND_DATA_ROOT, RUNSC, SYSBOX
from codeyard.domain.container import LABEL_OWNER, ContainerSpec, ContainerState, ExitReason
from codeyard.domain.errors import RuntimeNotAvailable
from codeyard.domain.worker import NetworkPolicy, Resources
from tests import services
from tests.integration import dind_support

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


@pytest.fixture
async def runtime(
    docker_client: docker.DockerClient, test_image: str
) -> AsyncIterator[DockerContainerRuntime]:
    owner = f"test-{uuid.uuid4().hex[:12]}"
    rt = DockerContainerRuntime(docker_client, owner=owner)
    try:
        yield rt
    finally:
        for info in await rt.list({LABEL_OWNER: owner}):
            await rt.remove(info.id)
        leftovers = docker_client.containers.list(
            all=True, filters={"label": f"{LABEL_OWNER}={owner}"}, sparse=True
        )
        for c in leftovers:
            c.remove(force=True)
        assert not leftovers


@pytest.fixture
def runsc(docker_client: docker.DockerClient) -> None:
    if RUNSC not in (docker_client.info().get("Runtimes") or {}):
        services.service_unavailable("gVisor", "the engine lists no runsc runtime")


def spec(test_image: str, **kwargs: Any) -> ContainerSpec:
    kwargs.setdefault("command", ("sleep", "300"))
    return ContainerSpec(image=test_image, **kwargs)


# --- init and exit reasons -------------------------------------------------------------------


async def test_init_is_pid_1_and_stop_is_prompt(
    runtime: DockerContainerRuntime, test_image: str
) -> None:
    info = await runtime.create(spec(test_image))
    await runtime.start(info.id)
    pid1 = await runtime.exec(info.id, ["cat", "/proc/1/cmdline"])
    assert pid1.stdout.split("\0")[:2] == ["/sbin/docker-init", "--"]
    began = time.monotonic()
    await runtime.stop(info.id, timeout_s=10)
    took = time.monotonic() - began
    print(f"stop of `sleep 300` under docker-init: {took * 1000:.0f} ms")
    assert took < 3  # SIGTERM reaches sleep through tini: no 10 s wait for the SIGKILL
    stopped = await runtime.inspect(info.id)
    assert (stopped.exit_code, stopped.reason) == (143, ExitReason.STOPPED)


async def test_without_init_sleep_ignores_sigterm(
    runtime: DockerContainerRuntime, test_image: str
) -> None:
    info = await runtime.create(spec(test_image, init=False))
    await runtime.start(info.id)
    began = time.monotonic()
    await runtime.stop(info.id, timeout_s=1)
    assert time.monotonic() - began >= 1  # waited for the SIGKILL
    stopped = await runtime.inspect(info.id)
    assert (stopped.exit_code, stopped.reason) == (137, ExitReason.STOPPED)


async def test_exit_reasons(runtime: DockerContainerRuntime, test_image: str) -> None:
    running = await runtime.create(spec(test_image))
    assert (await runtime.inspect(running.id)).reason is None
    await runtime.start(running.id)
    assert (await runtime.inspect(running.id)).reason is None

    exited = await runtime.create(spec(test_image, command=("sh", "-c", "exit 3")))
    await runtime.start(exited.id)
    await runtime.wait(exited.id, timeout_s=30)
    assert (await runtime.inspect(exited.id)).reason is ExitReason.EXITED

    # Killed by a signal nobody here sent: 137, yet neither ours nor the OOM killer's.
    suicide = await runtime.create(spec(test_image, command=("sh", "-c", "kill -9 $$")))
    await runtime.start(suicide.id)
    assert await runtime.wait(suicide.id, timeout_s=30) == 137
    assert (await runtime.inspect(suicide.id)).reason is ExitReason.EXITED

    # A wait that times out, then a stop: the timeout kill of a task.
    with pytest.raises(TimeoutError):
        await runtime.wait(running.id, timeout_s=0.5)
    await runtime.stop(running.id, timeout_s=5)
    info = await runtime.inspect(running.id)
    assert (info.state, info.reason) == (ContainerState.EXITED, ExitReason.STOPPED)
    # list agrees with inspect, reason included.
    listed = {i.id: i for i in await runtime.list({LABEL_OWNER: info.labels[LABEL_OWNER]})}
    assert listed[running.id] == info
    # Started again, it is no longer "stopped by us".
    await runtime.start(running.id)
    assert (await runtime.inspect(running.id)).reason is None


async def test_oom_kill_reason(runtime: DockerContainerRuntime, test_image: str) -> None:
    hog = ("sh", "-c", 'x=$(head -c 64m /dev/zero | tr "\\0" a); echo survived')
    info = await runtime.create(spec(test_image, command=hog, resources=Resources(memory_mb=16)))
    await runtime.start(info.id)
    assert await runtime.wait(info.id, timeout_s=60) == 137
    result = await runtime.inspect(info.id)
    assert (result.oom_killed, result.reason) == (True, ExitReason.OOM)


# --- runtime choice --------------------------------------------------------------------------


@pytest.mark.usefixtures("runsc")
async def test_runs_under_gvisor_when_registered(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, test_image: str
) -> None:
    began = time.monotonic()
    info = await runtime.create(spec(test_image, runtime=RUNSC, network=NetworkPolicy.NONE))
    await runtime.start(info.id)
    print(f"runsc create+start: {(time.monotonic() - began) * 1000:.0f} ms")
    assert docker_client.api.inspect_container(info.id)["HostConfig"]["Runtime"] == RUNSC
    kernel = await runtime.exec(info.id, ["dmesg"])
    assert "gVisor" in kernel.stdout  # the sandbox's own kernel log, not the host's
    uid = await runtime.exec(info.id, ["id", "-u"])
    assert uid.stdout.strip() == "1000"
    links = await runtime.exec(info.id, ["ls", "/sys/class/net"])
    assert links.stdout.split() in ([], ["lo"])
    await runtime.stop(info.id, timeout_s=10)
    stopped = await runtime.inspect(info.id)
    assert (stopped.exit_code, stopped.reason) == (143, ExitReason.STOPPED)


@pytest.mark.usefixtures("runsc")
async def test_gvisor_without_network_refuses_a_network(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, test_image: str
) -> None:
    args = docker_client.info()["Runtimes"][RUNSC].get("runtimeArgs") or []
    if "--network=none" not in args:
        pytest.skip("runsc is registered with a network here")
    with pytest.raises(RuntimeNotAvailable) as caught:
        await runtime.create(spec(test_image, runtime=RUNSC, network=NetworkPolicy.EGRESS))
    assert caught.value.fields["network"] == "egress"


async def test_sysbox_is_refused_with_a_clear_error(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, test_image: str
) -> None:
    if SYSBOX in (docker_client.info().get("Runtimes") or {}):
        pytest.skip("this engine offers sysbox")
    with pytest.raises(RuntimeNotAvailable) as caught:
        await runtime.create(spec(test_image, runtime=SYSBOX))
    assert caught.value.fields["runtime"] == SYSBOX
    assert "runc" in caught.value.fields["available"]
    assert SYSBOX in str(caught.value)


# --- Docker-in-Docker ------------------------------------------------------------------------


async def test_dind_without_sysbox_needs_the_opt_in(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, test_image: str
) -> None:
    if SYSBOX in (docker_client.info().get("Runtimes") or {}):
        pytest.skip("this engine offers sysbox: DinD uses it")
    with pytest.raises(RuntimeNotAvailable) as caught:
        await runtime.create(spec(test_image, docker_in_docker=True))
    assert "allow_insecure_dind" in str(caught.value)

    info = await runtime.create(spec(test_image, docker_in_docker=True, allow_insecure_dind=True))
    attrs = docker_client.api.inspect_container(info.id)
    host = attrs["HostConfig"]
    assert host["Runtime"] == "runc"
    assert host["CapAdd"] == ["ALL"]
    assert host["CapDrop"] == ["SYS_RESOURCE"]
    assert sorted(host["SecurityOpt"]) == ["apparmor=unconfined", "seccomp=unconfined"]
    assert host["DeviceCgroupRules"] == ["a *:* rwm"]
    assert host["Privileged"] is False
    mounts = {m["Destination"]: m for m in attrs["Mounts"]}
    assert mounts[DIND_DATA_ROOT]["Type"] == "volume"
    assert (mounts["/sys/fs/cgroup"]["Type"], mounts["/sys/fs/cgroup"]["RW"]) == ("bind", True)
    volume = mounts[DIND_DATA_ROOT]["Name"]

    await runtime.remove(info.id)
    # The anonymous data-root volume goes with the container.
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(volume)


async def test_insecure_dind_runs_a_container_inside(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient
) -> None:
    if SYSBOX in (docker_client.info().get("Runtimes") or {}):
        pytest.skip("this engine offers sysbox: DinD uses it")
    try:
        image = await anyio.to_thread.run_sync(dind_support.ensure_probe_image, docker_client)
    except dind_support.ProbeUnavailable as exc:
        services.service_unavailable("Docker-in-Docker probe image", str(exc))
    info = await runtime.create(
        ContainerSpec(
            image=image, command=("sleep", "300"), docker_in_docker=True, allow_insecure_dind=True
        )
    )
    await runtime.start(info.id)
    # The main process keeps uid 1000; the inner daemon runs as root through exec.
    assert (await runtime.exec(info.id, ["id", "-u"])).stdout.strip() == "1000"
    began = time.monotonic()
    daemon = "dockerd --iptables=false --ip6tables=false --bridge=none >/tmp/d.log 2>&1 &"
    assert (await runtime.exec(info.id, ["sh", "-c", daemon], user="0")).exit_code == 0
    with anyio.fail_after(30):
        for _ in range(300):  # polling: no event tells when the inner socket answers
            if (await runtime.exec(info.id, ["docker", "info"], user="0")).exit_code == 0:
                break
            await anyio.sleep(0.1)
    print(f"inner dockerd ready in {(time.monotonic() - began) * 1000:.0f} ms")
    driver = await runtime.exec(info.id, ["docker", "info", "--format", "{{.Driver}}"], user="0")
    assert driver.stdout.strip() == "overlay2"  # the data-root volume, not vfs
    inner = (
        "cd /bin && tar -c busybox sh | docker import - inner >/dev/null"
        " && docker run --rm --network none inner /busybox echo inner-ok"
    )
    result = await runtime.exec(info.id, ["sh", "-c", inner], user="0")
    assert (result.exit_code, result.stdout) == (0, "inner-ok\n"), result.stderr
