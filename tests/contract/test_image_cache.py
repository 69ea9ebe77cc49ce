"""The ImageCache contract (codeyard.ports.image_cache), one suite per adapter.

Each adapter is one param of the ``env`` fixture, which hands tests a :class:`CacheEnv`: the
cache, a way to move its clock, a way to make an image "used by a container", a build
counter and recipes that build / fail to build.

- ``memory``: :class:`InMemoryImageCache`; "in use" is its ``in_use`` set.
- ``docker``: :class:`DockerImageCache` on the real engine with the Redis ledger; images are
  built for real by :class:`LabelBuilder` (``FROM`` the busybox test image plus ``LABEL``
  lines, well under a second); "in use" is a created container from the image.
- ``docker-local``: the same with :class:`LocalImageUsage`, the ledger's in-process twin.

Docker teardown removes every container and image carrying the test's run label.
"""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
import anyio.to_thread
import docker
import docker.errors
import pytest
import redis.asyncio as aioredis

from codeyard.adapters.docker.image_cache import DockerImageCache, ImageUsage, LocalImageUsage
from codeyard.adapters.memory.clock import ManualClock
from codeyard.adapters.memory.image_cache import InMemoryImageCache
from codeyard.adapters.redis.image_usage import RedisImageUsage
from codeyard.domain.container import LABEL_IMAGE_HASH, ImageRecipe, ImageRef
from codeyard.domain.errors import ImageBuildFailed
from codeyard.domain.worker import Module
from codeyard.ports.image_cache import ImageCache
from tests import services

pytestmark = pytest.mark.anyio

BASE = services.TEST_IMAGE_TAG
HOUR = timedelta(hours=1)
#: Marks every image and container a test makes, so teardown finds them all.
LABEL_TEST_RUN = "dev.codeyard.test-run"


class LabelBuilder:
    """A real ImageBuilder that only adds labels: ``FROM base`` + the recipe as a LABEL.

    Counts builds per content hash (in ``builds``, which several builders may share).
    """

    def __init__(
        self, client: docker.DockerClient, *, run: str, builds: Counter[str] | None = None
    ) -> None:
        self._client = client
        self._run = run
        self.builds: Counter[str] = Counter() if builds is None else builds

    async def build(self, recipe: ImageRecipe, *, tag: str, labels: Mapping[str, str]) -> str:
        self.builds[labels[LABEL_IMAGE_HASH]] += 1
        recipe_label = json.dumps(recipe.model_dump_json())
        dockerfile = f"FROM {recipe.base_image}\nLABEL dev.codeyard.test-recipe={recipe_label}\n"
        all_labels = {**labels, LABEL_TEST_RUN: self._run}

        def build() -> str:
            try:
                image, _ = self._client.images.build(
                    fileobj=io.BytesIO(dockerfile.encode()),
                    tag=tag,
                    labels=all_labels,
                    rm=True,
                    forcerm=True,
                )
            except docker.errors.BuildError as exc:
                lines = [str(c.get("stream") or c.get("error") or "") for c in exc.build_log]
                raise ImageBuildFailed(
                    "image build failed", tag=tag, log="".join(lines[-20:]) or exc.msg
                ) from exc
            return str(image.id)

        return await anyio.to_thread.run_sync(build)


@dataclass
class CacheEnv:
    cache: ImageCache
    #: Let ``seconds`` pass on the cache's clock.
    advance: Callable[[float], None]
    now: Callable[[], datetime]
    #: Make a live container use the image (the cache's gc must keep it).
    use: Callable[[ImageRef], Awaitable[None]]
    #: Whether any image carries this tag.
    tagged: Callable[[str], Awaitable[bool]]
    build_count: Callable[[str], int]
    #: A recipe that builds, distinct per call (``variant`` keeps tests independent).
    recipe: Callable[[str], ImageRecipe]
    #: A recipe whose build fails.
    broken_recipe: Callable[[], ImageRecipe]


PARAMS = [
    "memory",
    pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.redis]),
    pytest.param("docker-local", marks=pytest.mark.docker),
]


@pytest.fixture(params=PARAMS)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[CacheEnv]:
    clock = ManualClock()
    run = uuid.uuid4().hex[:8]

    def advance(seconds: float) -> None:
        clock.advance(seconds)

    def recipe(variant: str) -> ImageRecipe:
        return ImageRecipe(base_image=BASE, wrapper_hash=f"{run}-{variant}")

    def broken_recipe() -> ImageRecipe:
        return ImageRecipe(base_image="codeyard-test/missing:nope", wrapper_hash=run)

    if request.param == "memory":
        in_use: set[str] = set()
        memory = InMemoryImageCache(
            clock=clock, in_use=in_use, base_images={BASE}, build_delay_s=0.05
        )

        async def use_in_memory(ref: ImageRef) -> None:
            in_use.add(ref.content_hash)

        async def tagged_in_memory(tag: str) -> bool:
            return any(r.tag == tag for r in await memory.list_images())

        yield CacheEnv(
            memory, advance, clock.now, use_in_memory, tagged_in_memory,
            memory.build_count, recipe, broken_recipe,
        )  # fmt: skip
        return

    client: docker.DockerClient = request.getfixturevalue("docker_client")
    request.getfixturevalue("test_image")
    redis_client: aioredis.Redis | None = None
    usage: ImageUsage = LocalImageUsage()
    if request.param == "docker":
        redis_client = aioredis.Redis.from_url(request.getfixturevalue("redis_db"))
        usage = RedisImageUsage(redis_client, key=f"codeyard:images:{run}")
    builder = LabelBuilder(client, run=run)
    cache = DockerImageCache(client, builder, usage, clock=clock)

    async def use_in_docker(ref: ImageRef) -> None:
        labels = {LABEL_TEST_RUN: run}
        await anyio.to_thread.run_sync(
            lambda: client.containers.create(ref.tag, command=["true"], labels=labels)
        )

    async def tagged_in_docker(tag: str) -> bool:
        try:
            await anyio.to_thread.run_sync(client.images.get, tag)
        except docker.errors.ImageNotFound:
            return False
        return True

    try:
        yield CacheEnv(
            cache, advance, clock.now, use_in_docker, tagged_in_docker,
            builder.builds.__getitem__, recipe, broken_recipe,
        )  # fmt: skip
    finally:
        if redis_client is not None:
            await redis_client.aclose()
        remove_test_objects(client, run)


def remove_test_objects(client: docker.DockerClient, run: str) -> None:
    """Remove the containers, then the images, labelled with this test run."""
    flt: dict[str, str | list[str] | bool] = {"label": f"{LABEL_TEST_RUN}={run}"}
    for container in client.containers.list(all=True, filters=flt, sparse=True):
        container.remove(force=True)
    for image in client.images.list(all=True, filters=flt):
        with contextlib.suppress(docker.errors.NotFound):  # a child's removal took it
            client.images.remove(str(image.id), force=True)


async def test_ensure_returns_the_recipes_image(env: CacheEnv) -> None:
    recipe = env.recipe("a")
    ref = await env.cache.ensure(recipe)
    assert ref.content_hash == recipe.content_hash()
    assert ref.tag == recipe.tag
    assert ref.image_id
    assert ref.created_at == ref.last_used_at
    assert await env.cache.get(recipe.content_hash()) == ref
    assert env.build_count(recipe.content_hash()) == 1


async def test_concurrent_ensures_build_once(env: CacheEnv) -> None:
    recipe = env.recipe("a")
    refs: list[ImageRef] = []

    async def ensure() -> None:
        refs.append(await env.cache.ensure(recipe))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(ensure)
    assert len(refs) == 10
    assert {r.image_id for r in refs} == {refs[0].image_id}
    assert env.build_count(recipe.content_hash()) == 1


async def test_equal_recipes_share_one_image(env: CacheEnv) -> None:
    base = env.recipe("a")
    same = base.model_copy(update={"modules": (Module.NODE, Module.GIT)})
    reordered = base.model_copy(update={"modules": (Module.GIT, Module.NODE)})
    other = env.recipe("b")
    first, second = await env.cache.ensure(same), await env.cache.ensure(reordered)
    assert first.content_hash == second.content_hash
    assert first.image_id == second.image_id
    assert env.build_count(first.content_hash) == 1
    assert (await env.cache.ensure(other)).content_hash != first.content_hash


@pytest.mark.parametrize(
    "change", [{"wrapper_hash": "changed-wrapper"}, {"agent": "claude", "agent_version": "9.9.9"}]
)
async def test_a_changed_recipe_field_is_a_new_image(env: CacheEnv, change: dict[str, str]) -> None:
    recipe = env.recipe("a")
    changed = recipe.model_copy(update={k: f"{v}-{recipe.wrapper_hash}" for k, v in change.items()})
    first = await env.cache.ensure(recipe)
    second = await env.cache.ensure(changed)
    assert second.content_hash == changed.content_hash() != first.content_hash
    assert second.tag != first.tag
    assert second.image_id != first.image_id
    assert env.build_count(first.content_hash) == env.build_count(second.content_hash) == 1
    assert await env.cache.get(first.content_hash) is not None


async def test_each_ensure_records_a_use_and_get_does_not(env: CacheEnv) -> None:
    recipe = env.recipe("a")
    first = await env.cache.ensure(recipe)
    env.advance(60)
    assert await env.cache.get(recipe.content_hash()) == first  # not a use
    second = await env.cache.ensure(recipe)
    assert second.created_at == first.created_at
    assert second.last_used_at == env.now()
    assert second.last_used_at - first.last_used_at == timedelta(seconds=60)
    assert env.build_count(recipe.content_hash()) == 1


async def test_get_unknown_hash_is_none(env: CacheEnv) -> None:
    assert await env.cache.get("0" * 64) is None


async def test_list_images_least_recently_used_first(env: CacheEnv) -> None:
    a, b, c = env.recipe("a"), env.recipe("b"), env.recipe("c")
    for recipe in (a, b, c):
        await env.cache.ensure(recipe)
        env.advance(1)
    await env.cache.ensure(a)
    listed = [r.content_hash for r in await env.cache.list_images()]
    assert listed == [b.content_hash(), c.content_hash(), a.content_hash()]


async def test_gc_removes_old_images_and_keeps_recent_and_in_use(env: CacheEnv) -> None:
    old, busy, recent = env.recipe("old"), env.recipe("busy"), env.recipe("recent")
    await env.cache.ensure(old)
    busy_ref = await env.cache.ensure(busy)
    env.advance(2 * HOUR.total_seconds())
    await env.cache.ensure(recent)
    await env.use(busy_ref)

    removed = await env.cache.gc(HOUR)
    assert [r.content_hash for r in removed] == [old.content_hash()]
    assert await env.cache.get(old.content_hash()) is None
    assert not await env.tagged(old.tag)
    assert await env.cache.get(busy.content_hash()) is not None
    assert await env.cache.get(recent.content_hash()) is not None
    assert await env.cache.gc(HOUR) == []

    # Gone means rebuilt on the next use.
    await env.cache.ensure(old)
    assert env.build_count(old.content_hash()) == 2


async def test_gc_never_removes_under_a_concurrent_ensure(env: CacheEnv) -> None:
    recipe = env.recipe("a")
    await env.cache.ensure(recipe)
    env.advance(2 * HOUR.total_seconds())
    results: list[ImageRef] = []

    async def ensure() -> None:
        results.append(await env.cache.ensure(recipe))

    async with anyio.create_task_group() as tg:
        tg.start_soon(ensure)
        tg.start_soon(env.cache.gc, HOUR)
    assert results[0].content_hash == recipe.content_hash()
    # Whichever ran first, the image exists after its ensure returned.
    assert await env.cache.get(recipe.content_hash()) is not None


async def test_build_failure_raises_and_caches_nothing(env: CacheEnv) -> None:
    recipe = env.broken_recipe()
    with pytest.raises(ImageBuildFailed) as caught:
        await env.cache.ensure(recipe)
    assert caught.value.fields["log"]
    assert await env.cache.get(recipe.content_hash()) is None
    assert not await env.tagged(recipe.tag)
    with pytest.raises(ImageBuildFailed):
        await env.cache.ensure(recipe)  # retried, not a cached failure
    assert env.build_count(recipe.content_hash()) == 2
