"""DockerContainerRuntime against the real engine: what only Docker can show.

The shared behaviour is in tests/contract/test_container_runtime.py; here: the secure
defaults as ``docker inspect`` sees them, OOM kills, read-only roots, concurrency through one
client, and an unreachable engine.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import docker
import pytest

from codeyard.adapters.docker.client import open_docker_client
from codeyard.adapters.docker.container_runtime import DockerContainerRuntime
from codeyard.adapters.docker.networks import EGRESS_NETWORK
from codeyard.domain.container import (
    LABEL_CREATED,
    LABEL_OWNER,
    ContainerSpec,
    ContainerState,
    Mount,
)
from codeyard.domain.errors import InvalidRequest, ServiceUnavailable
from codeyard.domain.worker import NetworkPolicy, Resources

pytestmark = [pytest.mark.anyio, pytest.mark.docker]

MIB = 1024 * 1024


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


def spec(test_image: str, **kwargs: Any) -> ContainerSpec:
    kwargs.setdefault("command", ("sleep", "300"))
    return ContainerSpec(image=test_image, **kwargs)


async def test_secure_defaults_reach_the_engine(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, test_image: str
) -> None:
    resources = Resources(cpus=0.5, memory_mb=64, pids=50)
    info = await runtime.create(
        spec(test_image, resources=resources, network=NetworkPolicy.NONE, workdir="/tmp")
    )
    attrs = docker_client.api.inspect_container(info.id)
    host, config = attrs["HostConfig"], attrs["Config"]
    assert config["User"] == "1000:1000"
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == 64 * MIB
    assert host["MemorySwap"] == host["Memory"]
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 50
    assert host["NetworkMode"] == "none"
    assert host["Privileged"] is False
    assert config["WorkingDir"] == "/tmp"

    await runtime.start(info.id)
    result = await runtime.exec(info.id, ["id", "-u"])
    assert result.stdout.strip() == "1000"
    # No capabilities at all in the effective set.
    status = await runtime.exec(info.id, ["grep", "CapEff", "/proc/self/status"])
    assert status.stdout.split()[-1] == "0000000000000000"


async def test_created_at_label_is_a_recent_utc_time(
    runtime: DockerContainerRuntime, test_image: str
) -> None:
    info = await runtime.create(spec(test_image))
    created = datetime.fromisoformat(info.labels[LABEL_CREATED])
    assert created.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - created) < timedelta(minutes=1)


async def test_egress_uses_the_firewalled_codeyard_network(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, test_image: str
) -> None:
    info = await runtime.create(spec(test_image, network=NetworkPolicy.EGRESS))
    await runtime.start(info.id)
    attrs = docker_client.api.inspect_container(info.id)
    # Not the default bridge: on it host services are reachable (see test_network_policy.py).
    assert attrs["HostConfig"]["NetworkMode"] == EGRESS_NETWORK
    ip = attrs["NetworkSettings"]["Networks"][EGRESS_NETWORK]["IPAddress"]
    assert (await runtime.inspect(info.id)).ip == ip


async def test_oom_kill_is_reported(runtime: DockerContainerRuntime, test_image: str) -> None:
    hog = ("sh", "-c", 'x=$(head -c 64m /dev/zero | tr "\\0" a); echo survived')
    info = await runtime.create(spec(test_image, command=hog, resources=Resources(memory_mb=16)))
    await runtime.start(info.id)
    assert await runtime.wait(info.id, timeout_s=60) == 137
    result = await runtime.inspect(info.id)
    assert result.oom_killed is True
    assert result.state is ContainerState.EXITED
    assert "survived" not in await runtime.logs(info.id)


async def test_read_only_root_with_tmpfs_mounts(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, test_image: str
) -> None:
    mounts = (Mount(target="/work", tmpfs_size_mb=8), Mount(target="/cfg", read_only=True))
    info = await runtime.create(spec(test_image, read_only_root=True, mounts=mounts))
    await runtime.start(info.id)
    denied = await runtime.exec(info.id, ["touch", "/home/worker/x"])
    assert denied.exit_code != 0
    assert "Read-only file system" in denied.stderr
    wrote = await runtime.exec(info.id, ["sh", "-c", "echo hi > /work/f && cat /work/f"])
    assert (wrote.exit_code, wrote.stdout) == (0, "hi\n")
    assert (await runtime.exec(info.id, ["touch", "/cfg/x"])).exit_code != 0
    tmpfs = docker_client.api.inspect_container(info.id)["HostConfig"]["Tmpfs"]
    assert tmpfs == {
        "/work": "exec,uid=1000,gid=1000,size=8m",
        "/cfg": "exec,uid=1000,gid=1000,ro",
    }


async def test_entrypoint_env_and_exec_user(
    runtime: DockerContainerRuntime, test_image: str
) -> None:
    info = await runtime.create(
        spec(
            test_image,
            entrypoint=("sh", "-c"),
            command=("echo $GREETING",),
            env={"GREETING": "hej"},
        )
    )
    await runtime.start(info.id)
    assert await runtime.wait(info.id, timeout_s=30) == 0
    assert (await runtime.logs(info.id)).strip() == "hej"

    other = await runtime.create(spec(test_image))
    await runtime.start(other.id)
    as_root = await runtime.exec(other.id, ["id", "-u"], user="0")
    assert as_root.stdout.strip() == "0"


async def test_exec_stderr_is_separate(runtime: DockerContainerRuntime, test_image: str) -> None:
    info = await runtime.create(spec(test_image))
    await runtime.start(info.id)
    result = await runtime.exec(info.id, ["sh", "-c", "echo out; echo err >&2; exit 5"])
    assert (result.exit_code, result.stdout, result.stderr) == (5, "out\n", "err\n")


async def test_cancelled_wait_returns_promptly(
    runtime: DockerContainerRuntime, test_image: str
) -> None:
    info = await runtime.create(spec(test_image))
    await runtime.start(info.id)
    began = time.monotonic()
    with anyio.move_on_after(0.5):
        await runtime.wait(info.id)
    assert time.monotonic() - began < 3
    await runtime.remove(info.id)  # also releases the abandoned waiting thread


async def test_ten_concurrent_lifecycles_through_one_client(
    runtime: DockerContainerRuntime, test_image: str
) -> None:
    codes: list[int] = []

    async def lifecycle(n: int) -> None:
        info = await runtime.create(spec(test_image, command=("sh", "-c", f"exit {n}")))
        await runtime.start(info.id)
        codes.append(await runtime.wait(info.id, timeout_s=60))
        await runtime.remove(info.id)

    began = time.monotonic()
    with anyio.fail_after(120):
        async with anyio.create_task_group() as tg:
            for n in range(10):
                tg.start_soon(lifecycle, n)
    assert sorted(codes) == list(range(10))
    print(f"10 concurrent lifecycles: {time.monotonic() - began:.2f} s")


def test_client_pool_must_exceed_the_limiter(docker_client: docker.DockerClient) -> None:
    small = docker.from_env(max_pool_size=10)
    try:
        with pytest.raises(InvalidRequest):
            DockerContainerRuntime(small, owner="x", max_concurrency=16)
        DockerContainerRuntime(small, owner="x", max_concurrency=8)
    finally:
        small.close()


async def test_unreachable_engine_is_service_unavailable(tmp_path: Any) -> None:
    url = f"unix://{tmp_path}/no-docker.sock"
    with pytest.raises(ServiceUnavailable) as caught:
        open_docker_client(url)
    assert caught.value.fields["service"] == "docker"

    # A client made without contacting the engine (pinned API version) fails at first use.
    client = docker.DockerClient(base_url=url, version="1.41", max_pool_size=32)
    try:
        rt = DockerContainerRuntime(client, owner="x")
        with pytest.raises(ServiceUnavailable):
            await rt.list()
        with pytest.raises(ServiceUnavailable):
            await rt.inspect("abc")
    finally:
        client.close()


def test_open_docker_client_pings(docker_client: docker.DockerClient) -> None:
    client = open_docker_client()
    try:
        assert client.ping()
    finally:
        client.close()
