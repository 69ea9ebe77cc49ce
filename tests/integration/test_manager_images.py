"""The manager's worker images on a real engine: built once, with this checkout's codeyard.

Cold (fresh CI) the first test bootstraps the base and builds the claude image: minutes,
above the 300 s default timeout. The wheel test builds this checkout with uv (seconds).
"""

from __future__ import annotations

import time
import uuid
import zipfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import anyio
import docker
import pytest

from codeyard.adapters.docker.container_runtime import DockerContainerRuntime
from codeyard.adapters.docker.dockerfile import LABEL_AGENT_VERSION, LABEL_WRAPPER_HASH
from codeyard.adapters.docker.image_cache import DockerImageCache, LocalImageUsage
from codeyard.app.manager.images import WorkerImages
from codeyard.app.settings import Settings
from codeyard.app.wrapper_wheel import WrapperWheel, wrapper_wheel
from codeyard.domain.agent_cli import PINNED
from codeyard.domain.container import (
    LABEL_IMAGE_HASH,
    LABEL_OWNER,
    ContainerSpec,
    ImageRecipe,
    ImageRef,
    Mount,
)
from tests.integration.manager_support import CLAUDE_SPEC, claude_worker_image

__all__ = ["claude_worker_image"]  # the session fixture, until conftest imports it

pytestmark = [pytest.mark.anyio]
ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_the_claude_image_runs_codeyard_and_the_pinned_cli(
    claude_worker_image: tuple[WorkerImages, ImageRef],
    runtime: DockerContainerRuntime,
    docker_client: docker.DockerClient,
) -> None:
    images, ref = claude_worker_image
    assert ref.content_hash == images.key(CLAUDE_SPEC)
    labels = docker_client.images.get(ref.tag).labels
    assert labels[LABEL_IMAGE_HASH] == ref.content_hash
    # The wrapper is the checkout's (as the fixture saw it: the sources may change since).
    assert labels[LABEL_WRAPPER_HASH] == images.recipe(CLAUDE_SPEC).wrapper_hash
    assert labels[LABEL_AGENT_VERSION] == PINNED["claude"].version

    info = await runtime.create(_hardened(ref.tag))
    await runtime.start(info.id)
    helped = await runtime.exec(info.id, ("codeyard", "--help"))
    assert helped.exit_code == 0, helped
    assert "Usage" in helped.stdout
    version = await runtime.exec(info.id, ("claude", "--version"))
    assert version.exit_code == 0, version
    assert version.stdout.split()[0] == PINNED["claude"].version


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_a_second_ensure_and_another_manager_hit_the_cache(
    claude_worker_image: tuple[WorkerImages, ImageRef], docker_client: docker.DockerClient
) -> None:
    images, ref = claude_worker_image
    started = time.monotonic()
    again = await images.ensure(CLAUDE_SPEC)
    assert time.monotonic() - started < 10, "a cached image must not be rebuilt"
    assert (again.image_id, again.tag) == (ref.image_id, ref.tag)
    assert again.last_used_at >= ref.last_used_at

    # Another manager on this host (its own cache and empty ledger) with the same inputs
    # adopts the image: its builder refuses to run.
    recipe = images.recipe(CLAUDE_SPEC)
    other = WorkerImages(
        DockerImageCache(docker_client, _NoBuilds(), LocalImageUsage()),
        base_image=recipe.base_image,
        base_image_id=recipe.base_image_id,
        wrapper_hash=recipe.wrapper_hash,
        ca_certs_hash=recipe.ca_certs_hash,
    )
    adopted = await other.ensure(CLAUDE_SPEC)
    assert (adopted.image_id, adopted.content_hash) == (ref.image_id, ref.content_hash)


class _NoBuilds:
    async def build(self, recipe: ImageRecipe, *, tag: str, labels: Mapping[str, str]) -> str:
        raise AssertionError(f"{tag} was rebuilt although the engine has it")


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_concurrent_wheel_builds_share_one_cache_entry(tmp_path: Path) -> None:
    cache = tmp_path / "wheels"
    results: list[WrapperWheel] = []

    async def build() -> None:
        results.append(await wrapper_wheel(Settings(), source=ROOT, cache_dir=cache))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(build)

    ((path, source_hash),) = {(r.path, r.source_hash) for r in results}
    assert path.parent == cache / source_hash
    # One entry, no leftover temporary directory beside it.
    assert sorted(p.name for p in cache.iterdir()) == [source_hash, f"{source_hash}.lock"]
    names = zipfile.ZipFile(results[0].path).namelist()
    assert "codeyard/app/manager/images.py" in names
    # Built with SOURCE_DATE_EPOCH: every entry carries the fixed 1980 timestamp.
    assert {info.date_time[:3] for info in zipfile.ZipFile(results[0].path).infolist()} == {
        (1980, 1, 1)
    }
