"""A real claude worker image for the manager tests, built once per session.

``claude_worker_image`` is a session fixture (conftest imports it) returning
``(WorkerImages, ImageRef)`` for ``WorkerSpec(agent="claude")``: the image the manager
would build with this checkout's wrapper, on the bootstrapped base, with the host's CAs.
Cold this takes minutes (base bootstrap, apt, Node.js, the wrapper's dependencies, the
claude CLI); warm, the engine's layer cache and the wheel cache make it seconds. Each
source change makes a new ~450 MB image: the previous ones are removed (see
:func:`drop_stale_worker_images`).
"""

from __future__ import annotations

import contextlib
import time

import anyio
import anyio.to_thread
import docker
import docker.errors
import pytest

from codeyard.adapters.docker.dockerfile import (
    LABEL_AGENT,
    LABEL_MODULES,
    LABEL_WRAPPER_HASH,
)
from codeyard.adapters.docker.image_cache import LocalImageUsage
from codeyard.app.manager.images import WorkerImages, docker_worker_images
from codeyard.app.settings import Settings
from codeyard.domain.container import ImageRef
from codeyard.domain.worker import WorkerSpec

BUILD_TIMEOUT_S = 900
CLAUDE_SPEC = WorkerSpec(agent="claude")


def drop_stale_worker_images(
    client: docker.DockerClient, images: WorkerImages, spec: WorkerSpec, keep: ImageRef
) -> None:
    """Remove images of ``spec``'s recipe built from other wrapper sources.

    Only images with ``spec``'s agent and modules and another wrapper hash are candidates
    (older checkouts of this spec); the engine refuses to remove one a container uses,
    which is then kept. Shared layers stay, as the next build's cache.
    """
    recipe = images.recipe(spec)
    flt = {
        "label": [
            f"{LABEL_AGENT}={recipe.agent or ''}",
            f"{LABEL_MODULES}={','.join(sorted(m.value for m in recipe.modules))}",
        ]
    }
    for image in client.images.list(filters=flt):
        if (
            image.id is None
            or image.id == keep.image_id
            or image.labels.get(LABEL_WRAPPER_HASH) == "hand-built"
        ):
            continue
        if image.labels.get(LABEL_WRAPPER_HASH) != recipe.wrapper_hash:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(image.id)


@pytest.fixture(scope="session")
async def claude_worker_image(
    docker_client: docker.DockerClient,
) -> tuple[WorkerImages, ImageRef]:
    started = time.monotonic()
    images = await docker_worker_images(Settings(), docker_client, usage=LocalImageUsage())
    with anyio.fail_after(BUILD_TIMEOUT_S):
        ref = await images.ensure(CLAUDE_SPEC)
    print(f"claude worker image {ref.tag} ready in {time.monotonic() - started:.1f}s")
    await anyio.to_thread.run_sync(
        drop_stale_worker_images, docker_client, images, CLAUDE_SPEC, ref
    )
    return images, ref
