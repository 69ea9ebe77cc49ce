"""The ImageCache contract (codeyard.ports.image_cache), one suite per adapter.

Only the in-memory cache exists so far. Each adapter is one param of the ``env`` fixture,
which hands tests a :class:`CacheEnv`: the cache, a way to move its clock, the set of
hashes live containers use, a build counter and recipes that build / fail to build. A
Docker-backed cache becomes one more param (its clock, counter and recipes on the local
test image) without touching the test bodies.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
import pytest

from codeyard.adapters.memory.clock import ManualClock
from codeyard.adapters.memory.image_cache import InMemoryImageCache
from codeyard.domain.container import ImageRecipe, ImageRef
from codeyard.domain.errors import ImageBuildFailed
from codeyard.domain.worker import Module
from codeyard.ports.image_cache import ImageCache

pytestmark = pytest.mark.anyio

BASE = "codeyard-test/busybox:latest"
HOUR = timedelta(hours=1)


@dataclass
class CacheEnv:
    cache: ImageCache
    #: Let ``seconds`` pass on the cache's clock.
    advance: Callable[[float], None]
    now: Callable[[], datetime]
    #: Content hashes live containers use; the test mutates it.
    in_use: set[str]
    build_count: Callable[[str], int]
    #: A recipe that builds, distinct per call (``variant`` keeps tests independent).
    recipe: Callable[[str], ImageRecipe]
    #: A recipe whose build fails.
    broken_recipe: Callable[[], ImageRecipe]


@pytest.fixture(params=["memory"])
def env(request: pytest.FixtureRequest) -> CacheEnv:
    clock = ManualClock()
    in_use: set[str] = set()
    cache = InMemoryImageCache(clock=clock, in_use=in_use, base_images={BASE}, build_delay_s=0.05)
    run = uuid.uuid4().hex[:8]

    def advance(seconds: float) -> None:
        clock.advance(seconds)

    return CacheEnv(
        cache=cache,
        advance=advance,
        now=clock.now,
        in_use=in_use,
        build_count=cache.build_count,
        recipe=lambda variant: ImageRecipe(base_image=BASE, wrapper_hash=f"{run}-{variant}"),
        broken_recipe=lambda: ImageRecipe(base_image="codeyard-test/missing:nope"),
    )


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
    await env.cache.ensure(busy)
    env.advance(2 * HOUR.total_seconds())
    await env.cache.ensure(recent)
    env.in_use.add(busy.content_hash())

    removed = await env.cache.gc(HOUR)
    assert [r.content_hash for r in removed] == [old.content_hash()]
    assert await env.cache.get(old.content_hash()) is None
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
    with pytest.raises(ImageBuildFailed):
        await env.cache.ensure(recipe)  # retried, not a cached failure
    assert env.build_count(recipe.content_hash()) == 2
