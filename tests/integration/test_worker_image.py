"""A real worker image: bootstrapped base, generated Dockerfile, hardened container.

Cold on a fresh machine this bootstraps ``codeyard-base:ubuntu-noble`` (debootstrap, ~30 s)
and builds the image (apt, Node.js, the wrapper from PyPI: a few minutes); afterwards the
base is reused and the engine's layer cache makes the rebuild take seconds. The wheel is
built with a fixed SOURCE_DATE_EPOCH so its bytes, and so the cached layers, stay stable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import docker
import pytest

from codeyard.adapters.docker.base_image import base_tag, ensure_base_image
from codeyard.adapters.docker.container_runtime import DockerContainerRuntime
from codeyard.adapters.docker.dockerfile import LABEL_AGENT_VERSION, NODE_VERSION, ca_certs_hash
from codeyard.adapters.docker.image_builder import (
    DockerImageBuilder,
    read_ca_certs,
    wrapper_source_hash,
)
from codeyard.domain.agent_cli import PINNED
from codeyard.domain.container import (
    LABEL_IMAGE_HASH,
    LABEL_OWNER,
    ContainerSpec,
    ImageRecipe,
    Mount,
)
from codeyard.domain.errors import ImageBuildFailed
from codeyard.domain.worker import Module

# Cold (fresh CI) the first test also bootstraps the base and builds: above the 300 s default.
pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
DISTRO = "ubuntu-noble"
BUILD_TIMEOUT_S = 900
#: Marks the images this module builds, so a run can drop the previous run's leftovers.
TEST_LABEL = "dev.codeyard.test"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = shutil.which("uv")
    assert uv, "uv is installed by scripts/dev setup"
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "SOURCE_DATE_EPOCH": "315532800"},
    )
    (built,) = out.glob("codeyard-*.whl")
    return built


@pytest.fixture(scope="module")
async def base_id(docker_client: docker.DockerClient) -> str:
    started = time.monotonic()
    image_id = await ensure_base_image(docker_client, distro=DISTRO, fallback=False)
    print(f"base image {base_tag(DISTRO)} ready in {time.monotonic() - started:.1f}s")
    return image_id


def _builder(docker_client: docker.DockerClient, wheel: Path | None) -> DockerImageBuilder:
    return DockerImageBuilder(docker_client, ca_certs=read_ca_certs(), wrapper_wheel=wheel)


def _drop_stale_images(client: docker.DockerClient, keep: str) -> None:
    # The wrapper hash covers src/, so each source change makes a new ~450 MB tag: keep only
    # the newest (its layers are the cache for the next run), never one a container uses.
    for image in client.images.list(filters={"label": f"{TEST_LABEL}=worker-image"}):
        if image.id and keep not in image.tags:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image.id)


async def _build(
    builder: DockerImageBuilder, recipe: ImageRecipe, *, kind: str = "agent-image"
) -> str:
    started = time.monotonic()
    labels = {LABEL_IMAGE_HASH: recipe.content_hash(), TEST_LABEL: kind}
    with anyio.fail_after(BUILD_TIMEOUT_S):
        image_id = await builder.build(recipe, tag=recipe.tag, labels=labels)
    print(f"built {recipe.tag} in {time.monotonic() - started:.1f}s")
    return image_id


@pytest.fixture(scope="module")
async def worker_image(docker_client: docker.DockerClient, base_id: str, wheel: Path) -> str:
    recipe = ImageRecipe(
        base_image=base_tag(DISTRO),
        base_image_id=base_id,
        modules=(Module.GIT, Module.PYTHON, Module.NODE),
        wrapper_hash=wrapper_source_hash(ROOT),
        ca_certs_hash=ca_certs_hash(read_ca_certs()),
    )
    await _build(_builder(docker_client, wheel), recipe, kind="worker-image")
    _drop_stale_images(docker_client, keep=recipe.tag)
    return recipe.tag


@pytest.fixture
async def runtime(docker_client: docker.DockerClient) -> AsyncIterator[DockerContainerRuntime]:
    owner = f"test-{uuid.uuid4().hex[:12]}"
    rt = DockerContainerRuntime(docker_client, owner=owner)
    try:
        yield rt
    finally:
        for info in await rt.list({LABEL_OWNER: owner}):
            await rt.remove(info.id)


def _hardened(image: str) -> ContainerSpec:
    return ContainerSpec(
        image=image,
        command=("sleep", "300"),
        read_only_root=True,
        workdir="/workspace",
        mounts=(
            Mount(target="/workspace", tmpfs_size_mb=64),
            Mount(target="/tmp", tmpfs_size_mb=64),
            Mount(target="/home/worker", tmpfs_size_mb=64),
        ),
    )


async def test_worker_image_runs_the_tools_as_uid_1000_hardened(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, worker_image: str
) -> None:
    image = docker_client.images.get(worker_image)
    # The tag is the first 16 hex digits of the content hash the label carries in full.
    assert image.labels[LABEL_IMAGE_HASH].startswith(worker_image.split(":")[1])
    print(f"{worker_image}: {image.attrs['Size'] / 1e6:.0f} MB")

    info = await runtime.create(_hardened(worker_image))
    await runtime.start(info.id)
    versions = {}
    for argv in (
        ("id", "-u"),
        ("git", "--version"),
        ("node", "--version"),
        ("python3", "--version"),
        ("codeyard", "--help"),
    ):
        result = await runtime.exec(info.id, argv)
        assert result.exit_code == 0, (argv, result)
        versions[argv[0]] = result.stdout.strip()
    assert versions["id"] == "1000"
    assert versions["git"].startswith("git version 2.")
    assert versions["node"] == f"v{NODE_VERSION}"
    assert versions["python3"].startswith("Python 3.")
    assert "Usage" in versions["codeyard"]

    # The workspace tmpfs is the worker's, the root filesystem is not writable.
    wrote = await runtime.exec(info.id, ("sh", "-c", "touch /workspace/f && touch /etc/f"))
    assert wrote.exit_code != 0
    assert "/etc/f" in wrote.stderr
    assert (await runtime.exec(info.id, ("test", "-f", "/workspace/f"))).exit_code == 0

    attrs = docker_client.api.inspect_container(info.id)
    host, config = attrs["HostConfig"], attrs["Config"]
    assert config["User"] == "1000:1000"
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["ReadonlyRootfs"] is True
    assert host["Privileged"] is False
    assert set(host["Tmpfs"]) == {"/workspace", "/tmp", "/home/worker"}
    assert not any("docker.sock" in b for b in host.get("Binds") or [])


async def test_agent_layer_installs_the_pinned_cli(
    runtime: DockerContainerRuntime, docker_client: docker.DockerClient, base_id: str
) -> None:
    pin = PINNED["gemini"]
    recipe = ImageRecipe(
        base_image=base_tag(DISTRO),
        base_image_id=base_id,
        modules=(Module.GIT,),
        agent="gemini",
        agent_version=pin.version,
        ca_certs_hash=ca_certs_hash(read_ca_certs()),
    )
    await _build(_builder(docker_client, None), recipe)
    assert docker_client.images.get(recipe.tag).labels[LABEL_AGENT_VERSION] == pin.version

    info = await runtime.create(_hardened(recipe.tag))
    await runtime.start(info.id)
    result = await runtime.exec(
        info.id, (pin.binary, "--version"), env={"GEMINI_CLI_NO_RELAUNCH": "true"}
    )
    assert result.exit_code == 0, result
    assert result.stdout.strip() == pin.version


async def test_failed_build_reports_the_log_tail_and_tags_nothing(
    docker_client: docker.DockerClient, base_id: str
) -> None:
    # An agent version that does not exist fails inside `npm install`, after real steps ran
    # (the same modules as above: the earlier layers come from the engine's cache).
    recipe = ImageRecipe(
        base_image=base_tag(DISTRO),
        base_image_id=base_id,
        modules=(Module.GIT,),
        agent="gemini",
        agent_version="0.0.0-codeyard-missing",
        ca_certs_hash=ca_certs_hash(read_ca_certs()),
    )
    with pytest.raises(ImageBuildFailed) as caught:
        await _build(_builder(docker_client, None), recipe)
    assert "0.0.0-codeyard-missing" in caught.value.fields["log"]
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(recipe.tag)


async def test_a_base_other_than_the_recipes_is_refused(
    docker_client: docker.DockerClient, base_id: str
) -> None:
    recipe = ImageRecipe(base_image=base_id, base_image_id="sha256:" + "0" * 64)
    with pytest.raises(ImageBuildFailed, match="base image"):
        await _build(_builder(docker_client, None), recipe)
