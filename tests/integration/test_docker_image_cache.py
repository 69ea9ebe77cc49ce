"""DockerImageCache beyond the port contract: several processes, the Redis lock, the engine.

"Two processes" are two caches with their own clients, locks and builders sharing one Redis
ledger: what separate processes share. Images are built for real by the contract suite's
:class:`LabelBuilder` (well under a second each).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import anyio
import anyio.to_thread
import docker
import pytest
import redis.asyncio as aioredis

from codeyard.adapters.docker.image_cache import DockerImageCache
from codeyard.adapters.memory.clock import ManualClock
from codeyard.adapters.memory.image_cache import InUse
from codeyard.adapters.redis.image_usage import RedisImageUsage
from codeyard.domain.container import LABEL_IMAGE_HASH, ImageRecipe, ImageRef
from tests import services
from tests.contract.test_image_cache import LABEL_TEST_RUN, LabelBuilder, remove_test_objects

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.redis]

DAY = 24 * 3600.0


@dataclass
class Yard:
    client: docker.DockerClient
    redis: aioredis.Redis
    clock: ManualClock
    run: str
    key: str
    builds: Counter[str]

    def usage(self, **kwargs: float) -> RedisImageUsage:
        return RedisImageUsage(self.redis, key=self.key, **kwargs)

    def cache(self, *, in_use: InUse = frozenset()) -> DockerImageCache:
        """A cache as another process would have it: its own locks, builder and limiter."""
        builder = LabelBuilder(self.client, run=self.run, builds=self.builds)
        return DockerImageCache(self.client, builder, self.usage(), clock=self.clock, in_use=in_use)

    def recipe(self, variant: str = "a") -> ImageRecipe:
        return ImageRecipe(base_image=services.TEST_IMAGE_TAG, wrapper_hash=f"{self.run}-{variant}")

    async def container(self, ref: ImageRef, *, run: bool) -> str:
        def create() -> str:
            c = self.client.containers.create(
                ref.tag, command=["true"], labels={LABEL_TEST_RUN: self.run}
            )
            if run:
                c.start()
                c.wait(timeout=30)
            return str(c.id)

        return await anyio.to_thread.run_sync(create)


@pytest.fixture
async def yard(
    docker_client: docker.DockerClient, test_image: str, redis_db: str
) -> AsyncIterator[Yard]:
    run = uuid.uuid4().hex[:8]
    # decode_responses as the app opens it (the contract suite uses the bytes form).
    client = aioredis.Redis.from_url(redis_db, decode_responses=True)
    try:
        yield Yard(docker_client, client, ManualClock(), run, f"codeyard:images:{run}", Counter())
    finally:
        await client.aclose()
        remove_test_objects(docker_client, run)


async def test_two_processes_racing_ensure_build_once(yard: Yard) -> None:
    first, second = yard.cache(), yard.cache()
    recipe = yard.recipe()
    refs: list[ImageRef] = []

    async def ensure(cache: DockerImageCache) -> None:
        refs.append(await cache.ensure(recipe))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(ensure, first)
            tg.start_soon(ensure, second)
    assert len(refs) == 10
    assert {r.image_id for r in refs} == {refs[0].image_id}
    assert yard.builds[recipe.content_hash()] == 1
    assert await second.get(recipe.content_hash()) == await first.get(recipe.content_hash())


async def test_a_dead_holders_lock_lapses_after_its_ttl(yard: Yard) -> None:
    usage = yard.usage(lock_ttl_s=0.5, poll_s=0.05)
    # What a process that took the lock and died leaves behind: a key nobody renews.
    await yard.redis.set(f"{yard.key}:lock:h1", "dead-holder", px=500)
    async with usage.lock("h1", wait=False) as held:
        assert not held
    started = time.monotonic()
    with anyio.fail_after(5):
        async with usage.lock("h1") as held:
            waited = time.monotonic() - started
            assert held
    assert 0.3 < waited < 2.0


async def test_a_held_lock_is_renewed_past_its_ttl(yard: Yard) -> None:
    holder, other = yard.usage(lock_ttl_s=0.3), yard.usage(lock_ttl_s=0.3)
    async with holder.lock("h1") as held:
        assert held
        for _ in range(6):  # 1.2 s: four times the ttl
            async with other.lock("h1", wait=False) as stolen:
                assert not stolen
            await anyio.sleep(0.2)
    async with other.lock("h1", wait=False) as taken:
        assert taken  # released at once, not left to lapse


async def test_the_lock_is_freed_by_errors_and_cancellation(yard: Yard) -> None:
    usage = yard.usage()
    with pytest.raises(KeyError):  # the block's own error, not an ExceptionGroup
        async with usage.lock("h1"):
            raise KeyError("boom")
    with anyio.move_on_after(0.1) as scope:
        async with usage.lock("h1"):
            await anyio.sleep(10)
    assert scope.cancelled_caught
    async with usage.lock("h1", wait=False) as held:
        assert held


async def test_gc_keeps_an_image_a_stopped_container_uses(yard: Yard) -> None:
    cache = yard.cache()
    ref = await cache.ensure(yard.recipe())
    container_id = await yard.container(ref, run=True)  # ran and exited
    yard.clock.advance(10 * DAY)
    assert await cache.gc(_days(1)) == []
    assert await cache.get(ref.content_hash) is not None

    await anyio.to_thread.run_sync(lambda: yard.client.api.remove_container(container_id))
    assert [r.image_id for r in await cache.gc(_days(1))] == [ref.image_id]
    assert cache.last_prune_reclaimed is not None  # the builder-cache prune ran
    assert await cache.list_images() == []


async def test_gc_keeps_hashes_in_use_says_are_live(yard: Yard) -> None:
    live: set[str] = set()

    async def in_use() -> set[str]:
        return live

    cache = yard.cache(in_use=in_use)
    ref = await cache.ensure(yard.recipe())
    live.add(ref.content_hash)
    yard.clock.advance(10 * DAY)
    assert await cache.gc(_days(1)) == []
    live.clear()
    assert [r.content_hash for r in await cache.gc(_days(1))] == [ref.content_hash]


async def test_gc_skips_an_image_another_process_is_ensuring(yard: Yard) -> None:
    cache, other = yard.cache(), yard.usage()
    ref = await cache.ensure(yard.recipe())
    yard.clock.advance(10 * DAY)
    async with other.lock(ref.content_hash):  # the other process's ensure holds it
        assert await cache.gc(_days(1)) == []
    assert [r.content_hash for r in await cache.gc(_days(1))] == [ref.content_hash]


async def test_an_image_removed_behind_the_caches_back_is_forgotten(yard: Yard) -> None:
    cache = yard.cache()
    ref = await cache.ensure(yard.recipe())
    await anyio.to_thread.run_sync(lambda: yard.client.images.remove(ref.tag))
    assert await cache.get(ref.content_hash) is None
    assert await cache.list_images() == []
    yard.clock.advance(10 * DAY)
    assert await cache.gc(_days(1)) == []  # nothing removed, but the ledger let it go
    assert await yard.usage().entries() == []
    await cache.ensure(yard.recipe())
    assert yard.builds[ref.content_hash] == 2


async def test_untracked_images_are_left_alone_until_ensure_adopts_them(yard: Yard) -> None:
    recipe = yard.recipe()
    builder = LabelBuilder(yard.client, run=yard.run, builds=yard.builds)
    labels = {LABEL_IMAGE_HASH: recipe.content_hash()}
    image_id = await builder.build(recipe, tag=recipe.tag, labels=labels)
    cache = yard.cache()
    assert await cache.list_images() == []
    yard.clock.advance(10 * DAY)
    assert await cache.gc(_days(1)) == []
    ref = await cache.ensure(recipe)
    assert ref.image_id == image_id
    assert yard.builds[recipe.content_hash()] == 1  # adopted, not rebuilt


async def test_a_foreign_image_under_the_tag_is_rebuilt(yard: Yard) -> None:
    recipe = yard.recipe()
    builder = LabelBuilder(yard.client, run=yard.run, builds=Counter())
    foreign = await builder.build(recipe, tag=recipe.tag, labels={LABEL_IMAGE_HASH: "0" * 64})
    ref = await yard.cache().ensure(recipe)
    assert ref.image_id != foreign
    assert ref.content_hash == recipe.content_hash()
    assert yard.builds[recipe.content_hash()] == 1


def _days(n: float) -> timedelta:
    return timedelta(days=n)
