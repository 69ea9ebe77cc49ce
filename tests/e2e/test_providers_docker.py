"""Issue #7 on the real thing: every provider's real CLI in a real worker container, pointed
at one endpoint by the embedded service's ``agent_base_url`` / ``agent_api_key`` (what
``codeyard run --provider P --base-url URL --api-key K`` configures).

One scripted model server (``0.0.0.0``, every dialect on one port) and one embedded
service serve the whole module; each provider's prompt carries a marker routing it to a
scenario that answers with that provider's own text, so a result can only come from that
provider's conversation. The worker image of each provider is built on first use
(minutes, cold) through the same image cache the embedded manager uses; the build and the
run are timed separately and printed (``-s`` shows them).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import docker
import pytest

from codeyard.adapters.docker.image_cache import LocalImageUsage
from codeyard.app.embedded import Embedded, open_embedded
from codeyard.app.manager.images import WorkerImages, docker_worker_images
from codeyard.app.settings import Settings
from codeyard.domain.agent import ResultStatus
from codeyard.domain.worker import WorkerSpec
from codeyard.testing.model_server import ModelServer, Router, Scenario
from tests.integration.manager_support import BUILD_TIMEOUT_S, drop_stale_worker_images

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.timeout(1800),
]

#: provider -> the model API dialect its CLI speaks against the scripted server.
DIALECTS = {
    "claude": "anthropic",
    "codex": "responses",
    "gemini": "gemini",
    "droid": "anthropic",
    "opencode": "chat",
    # The same CLI and image as opencode, one `opencode run` process per turn.
    "opencode-run": "chat",
}
API_KEY = "sk-codeyard-providers-k5"
RUN_TIMEOUT_S = 300


def marker(provider: str) -> str:
    return f"[provider:{provider}]"


def answer(provider: str) -> str:
    return f"{provider} answered through the worker"


@pytest.fixture(scope="module")
async def model() -> AsyncIterator[ModelServer]:
    router = Router(
        {marker(p): Scenario.text(answer(p)) for p in DIALECTS},
        default=Scenario.text("unrouted conversation"),
    )
    async with ModelServer(router, host="0.0.0.0") as server:
        yield server


@pytest.fixture(scope="module")
async def service(model: ModelServer) -> AsyncIterator[Embedded]:
    async with open_embedded(
        Settings(), agent_base_url=f"http://127.0.0.1:{model.port}", agent_api_key=API_KEY
    ) as embedded:
        yield embedded


@pytest.fixture(scope="module")
async def images(docker_client: docker.DockerClient) -> WorkerImages:
    """The recipes the embedded manager uses (same base, wrapper and CAs: same tags), to
    build each image ahead of its run and time the build apart from the run."""
    return await docker_worker_images(Settings(), docker_client, usage=LocalImageUsage())


@pytest.mark.parametrize("provider", list(DIALECTS))
async def test_a_provider_answers_through_a_worker_pointed_at_the_endpoint(
    provider: str,
    model: ModelServer,
    service: Embedded,
    images: WorkerImages,
    docker_client: docker.DockerClient,
) -> None:
    spec = WorkerSpec(agent=provider)
    started = time.monotonic()
    with anyio.fail_after(BUILD_TIMEOUT_S):
        ref = await images.ensure(spec)
    built = time.monotonic() - started
    await anyio.to_thread.run_sync(drop_stale_worker_images, docker_client, images, spec, ref)

    started = time.monotonic()
    result = await service.client.run(
        spec, f"{marker(provider)} Say hello.", timeout_s=RUN_TIMEOUT_S
    )
    ran = time.monotonic() - started
    print(f"\n{provider}: image {ref.tag} ready in {built:.1f}s; run took {ran:.1f}s")

    assert result.status is ResultStatus.SUCCESS, result
    assert result.text == answer(provider)
    requests = model.routed_requests(marker(provider))
    assert requests, f"{provider} never reached the model server"
    assert {r.dialect for r in requests} == {DIALECTS[provider]}
    # The key reached the endpoint (each dialect carries it in its own header).
    assert all(API_KEY in " ".join(r.headers.values()) for r in requests)
