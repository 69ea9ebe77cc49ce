"""Worker images as the manager needs them: one recipe per WorkerSpec, built through a cache.

:class:`WorkerImages` maps a :class:`WorkerSpec` to the :class:`ImageRecipe` that fully
determines its image (the instance's base image, wrapper and CA certificates plus the
spec's modules and agent CLI) and ensures it through an :class:`ImageCache`. The recipe's
content hash doubles as the warm-pool key: two specs with the same key run on the same
image. :func:`docker_worker_images` assembles the real thing (bootstrapped base, the
wrapper wheel, the host's CA certificates, a :class:`DockerImageCache`); it does I/O, so
the serve entrypoint calls it rather than the DI container.
"""

from __future__ import annotations

import anyio
import anyio.to_thread
import docker

from codeyard.adapters.docker._mapping import DOCKER_ERRORS, translate_error
from codeyard.adapters.docker.base_image import LABEL_BASE_DISTRO, base_tag, ensure_base_image
from codeyard.adapters.docker.dockerfile import ca_certs_hash
from codeyard.adapters.docker.image_builder import DockerImageBuilder, read_ca_certs
from codeyard.adapters.docker.image_cache import DockerImageCache, ImageUsage
from codeyard.adapters.memory.code_agent import SCRIPTED_PROVIDER
from codeyard.adapters.memory.image_cache import InUse
from codeyard.app.settings import Settings
from codeyard.app.wrapper_wheel import wrapper_wheel
from codeyard.domain.agent_cli import PINNED
from codeyard.domain.container import ImageRecipe, ImageRef
from codeyard.domain.errors import UnsupportedProvider
from codeyard.domain.worker import WorkerSpec
from codeyard.ports.clock import Clock
from codeyard.ports.image_cache import ImageCache

#: Providers that run another provider's CLI (the npm package named in PINNED).
CLI_OF_PROVIDER: dict[str, str] = {"opencode-run": "opencode"}
#: Providers that need no CLI in the image: the embedded, offline agent.
NO_CLI_PROVIDERS = frozenset({SCRIPTED_PROVIDER})


def agent_cli(provider: str) -> str | None:
    """The PINNED key of the CLI ``provider`` runs; ``None`` when it needs none.

    Raises :class:`UnsupportedProvider` for a provider no worker image can serve.
    """
    if provider in NO_CLI_PROVIDERS:
        return None
    cli = CLI_OF_PROVIDER.get(provider, provider)
    if cli not in PINNED:
        raise UnsupportedProvider(
            "no worker image can run this provider: its CLI has no pinned npm package",
            provider=provider,
            known=sorted({*PINNED, *CLI_OF_PROVIDER, *NO_CLI_PROVIDERS}),
        )
    return cli


class WorkerImages:
    """Recipes and images for worker specs on one instance's base, wrapper and CAs.

    ``recipe`` and ``key`` are pure. The agent version in a recipe is always explicit (the
    spec's, else the pinned one), so a new pin makes a new image rather than reusing one
    built with the old CLI under an unchanged hash. A spec's ``agent_version`` is ignored
    for providers without a CLI.
    """

    def __init__(
        self,
        cache: ImageCache,
        *,
        base_image: str,
        base_image_id: str = "",
        wrapper_hash: str,
        ca_certs_hash: str,
    ) -> None:
        self._cache = cache
        self._base_image = base_image
        self._base_image_id = base_image_id
        self._wrapper_hash = wrapper_hash
        self._ca_certs_hash = ca_certs_hash

    @property
    def cache(self) -> ImageCache:
        """The cache images are ensured through (the manager's ``gc`` runs on it)."""
        return self._cache

    def recipe(self, spec: WorkerSpec) -> ImageRecipe:
        cli = agent_cli(spec.agent)
        return ImageRecipe(
            base_image=self._base_image,
            base_image_id=self._base_image_id,
            modules=spec.modules,
            agent=cli,
            agent_version=None if cli is None else spec.agent_version or PINNED[cli].version,
            wrapper_hash=self._wrapper_hash,
            ca_certs_hash=self._ca_certs_hash,
        )

    def key(self, spec: WorkerSpec) -> str:
        """The warm-pool key: specs with equal keys share an image."""
        return self.recipe(spec).content_hash()

    async def ensure(self, spec: WorkerSpec) -> ImageRef:
        """The image for ``spec``, built when missing (minutes) and recorded as used."""
        return await self._cache.ensure(self.recipe(spec))


async def docker_worker_images(
    settings: Settings,
    client: docker.DockerClient,
    *,
    usage: ImageUsage,
    clock: Clock | None = None,
    limiter: anyio.CapacityLimiter | None = None,
    in_use: InUse = frozenset(),
) -> WorkerImages:
    """WorkerImages on Docker: ensures the base image and the wrapper wheel first.

    ``usage`` is the cache's ledger (RedisImageUsage across processes, LocalImageUsage for
    one); ``limiter`` bounds the cache's blocking Docker calls (share the runtime's);
    ``in_use`` names image hashes ``gc`` must keep. Bootstrapping the base takes ~30 s on a
    fresh host, building the wheel a few seconds; both are reused afterwards.
    """
    base_id = await ensure_base_image(client, distro=settings.worker_base_distro)
    # ensure_base_image may have fallen back to another distro: name the base it returned.
    distro = await anyio.to_thread.run_sync(_base_distro, client, base_id)
    wheel = await wrapper_wheel(settings)
    ca_certs = await anyio.to_thread.run_sync(read_ca_certs)
    builder = DockerImageBuilder(client, ca_certs=ca_certs, wrapper_wheel=wheel.path)
    cache = DockerImageCache(client, builder, usage, clock=clock, limiter=limiter, in_use=in_use)
    return WorkerImages(
        cache,
        base_image=base_tag(distro or settings.worker_base_distro),
        base_image_id=base_id,
        wrapper_hash=wheel.source_hash,
        ca_certs_hash=ca_certs_hash(ca_certs),
    )


def _base_distro(client: docker.DockerClient, base_id: str) -> str | None:
    try:
        labels: dict[str, str] = client.images.get(base_id).labels
    except DOCKER_ERRORS as exc:
        raise translate_error(exc, image=base_id) from exc
    return labels.get(LABEL_BASE_DISTRO)
