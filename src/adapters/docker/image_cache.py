"""DockerImageCache: the ImageCache port on a Docker engine, with a last-use ledger.

- Identity: an image belongs to a recipe when it is tagged ``recipe.tag`` *and* its label
  ``dev.codeyard.image-hash`` equals the full ``recipe.content_hash()`` (the tag holds only
  16 hex digits; a mismatching image under the tag is rebuilt over it).
- One build per hash: callers in this process queue on a per-hash :class:`anyio.Lock`; the
  holder then takes the ledger's per-hash lock (across processes with
  :class:`~codeyard.adapters.redis.image_usage.RedisImageUsage`), inspects, builds only if
  still missing. A process that loses the race finds the image when its turn comes.
- The ledger (``usage``) is the cache's memory: ``list_images`` and ``gc`` see the images
  it tracks (every ``ensure`` tracks its image). Images carrying the label but unknown to
  the ledger (say Redis was wiped) are left alone until an ``ensure`` adopts them: nothing
  is removed that the cache cannot date.
- ``gc`` removes an image only when its last use is older than ``max_age`` (by the injected
  clock), no container (running or stopped) has its image id, ``in_use`` does not name its
  hash, and it can take both locks without waiting (so never under an ``ensure``); it then
  re-reads the last use under the locks. The engine itself refuses (409) to remove an image
  a container created meanwhile uses; that image is kept. Removal untags ``tag`` with
  ``noprune=False`` (parents left untagged go too), then the builder cache is pruned.
- Times: ``created_at`` comes from the image's ``dev.codeyard.created-at`` label, stamped
  from the cache's clock at build time (the engine's own timestamp otherwise).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import docker
import docker.errors

from codeyard.adapters.docker._mapping import DOCKER_ERRORS, parse_time, translate_error
from codeyard.adapters.docker.image_types import ImageBuilder
from codeyard.adapters.memory.clock import SystemClock
from codeyard.adapters.memory.image_cache import InUse
from codeyard.domain.container import LABEL_CREATED, LABEL_IMAGE_HASH, ImageRecipe, ImageRef
from codeyard.domain.errors import ImageBuildFailed
from codeyard.ports.clock import Clock

T = TypeVar("T")


class ImageUsage(Protocol):
    """The ledger: last use per content hash, and a per-hash lock (see RedisImageUsage)."""

    async def touch(self, content_hash: str, at: datetime) -> datetime: ...
    async def last_used(self, content_hash: str) -> datetime | None: ...
    async def entries(self) -> list[tuple[str, datetime]]: ...
    async def forget(self, content_hash: str) -> None: ...
    def lock(
        self, content_hash: str, *, wait: bool = True
    ) -> AbstractAsyncContextManager[bool]: ...


class LocalImageUsage:
    """The in-process twin of RedisImageUsage: one process, no persistence."""

    def __init__(self) -> None:
        self._last: dict[str, datetime] = {}
        self._locks: dict[str, anyio.Lock] = {}

    async def touch(self, content_hash: str, at: datetime) -> datetime:
        await anyio.lowlevel.checkpoint()
        last = max(at, self._last.get(content_hash, at))
        self._last[content_hash] = last
        return last

    async def last_used(self, content_hash: str) -> datetime | None:
        await anyio.lowlevel.checkpoint()
        return self._last.get(content_hash)

    async def entries(self) -> list[tuple[str, datetime]]:
        await anyio.lowlevel.checkpoint()
        return sorted(self._last.items(), key=lambda item: (item[1], item[0]))

    async def forget(self, content_hash: str) -> None:
        await anyio.lowlevel.checkpoint()
        self._last.pop(content_hash, None)

    @asynccontextmanager
    async def lock(self, content_hash: str, *, wait: bool = True) -> AsyncIterator[bool]:
        async with _hold(self._locks.setdefault(content_hash, anyio.Lock()), wait=wait) as held:
            yield held


@asynccontextmanager
async def _hold(lock: anyio.Lock, *, wait: bool) -> AsyncIterator[bool]:
    """``lock`` for the block; with ``wait=False`` yields ``False`` when it is taken."""
    if wait:
        await lock.acquire()
    else:
        try:
            lock.acquire_nowait()
        except anyio.WouldBlock:
            yield False
            return
    try:
        yield True
    finally:
        lock.release()


def _tag_for(tags: list[str] | None, content_hash: str) -> str | None:
    """The cache's tag among ``tags`` (``name:<hash16>``), else the first real one."""
    real = [t for t in tags or [] if t != "<none>:<none>"]
    mine = (t for t in real if t.endswith(":" + content_hash[:16]))
    return next(mine, real[0] if real else None)


def _created(attrs: Mapping[str, Any], labels: Mapping[str, str]) -> datetime | None:
    """The cache's build stamp (its clock); else the engine's (epoch in lists, RFC 3339)."""
    with contextlib.suppress(ValueError):
        stamped = datetime.fromisoformat(labels.get(LABEL_CREATED, ""))
        if stamped.tzinfo is not None:
            return stamped
    raw = attrs.get("Created")
    return datetime.fromtimestamp(raw, UTC) if isinstance(raw, int) else parse_time(raw)


def _ref(
    attrs: Mapping[str, Any], labels: Mapping[str, str], tag: str, last_used: datetime
) -> ImageRef:
    """An ImageRef from an image inspect or list item (both have Id, Size and Created)."""
    return ImageRef(
        tag=tag,
        image_id=attrs["Id"],
        content_hash=labels[LABEL_IMAGE_HASH],
        size_bytes=attrs.get("Size") or 0,
        created_at=_created(attrs, labels) or last_used,
        last_used_at=last_used,
    )


class DockerImageCache:
    """:class:`~codeyard.ports.image_cache.ImageCache` on Docker; see the module notes.

    ``builder`` makes the images; ``usage`` is the ledger (Redis for several processes,
    :class:`LocalImageUsage` for one); ``limiter`` bounds the threads running blocking
    docker-py calls (share the runtime's, under the client's ``max_pool_size``);
    ``in_use`` names hashes to keep besides those containers use; ``prune_build_cache``
    turns off the builder-cache prune after ``gc``.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        builder: ImageBuilder,
        usage: ImageUsage,
        *,
        clock: Clock | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        in_use: InUse = frozenset(),
        prune_build_cache: bool = True,
    ) -> None:
        self._client = client
        self._api = client.api
        self._builder = builder
        self._usage = usage
        self._clock = clock or SystemClock()
        self._limiter = limiter or anyio.CapacityLimiter(8)
        self._in_use = in_use
        self._prune = prune_build_cache
        self._locks: dict[str, anyio.Lock] = {}
        #: Bytes the last builder-cache prune reclaimed; ``None`` when it did not run.
        self.last_prune_reclaimed: int | None = None

    async def _call(self, fn: Callable[[], T], *, image: str | None = None) -> T:
        try:
            return await anyio.to_thread.run_sync(fn, limiter=self._limiter)
        except DOCKER_ERRORS as exc:
            raise translate_error(exc, image=image) from exc

    async def _inspect(self, tag: str) -> dict[str, Any] | None:
        def lookup() -> dict[str, Any] | None:
            try:
                attrs: dict[str, Any] = self._client.images.get(tag).attrs
            except docker.errors.NotFound:
                return None
            return attrs

        return await self._call(lookup, image=tag)

    async def ensure(self, recipe: ImageRecipe) -> ImageRef:
        content_hash, tag = recipe.content_hash(), recipe.tag
        lock = self._locks.setdefault(content_hash, anyio.Lock())
        # A waiting ledger lock always ends up held: no need to look at what it yields.
        async with lock, self._usage.lock(content_hash):
            attrs = await self._inspect(tag)
            if attrs is None or _labels(attrs).get(LABEL_IMAGE_HASH) != content_hash:
                attrs = await self._build(recipe, content_hash, tag)
            last_used = await self._usage.touch(content_hash, self._clock.now())
            return _ref(attrs, _labels(attrs), tag, last_used)

    async def _build(self, recipe: ImageRecipe, content_hash: str, tag: str) -> dict[str, Any]:
        labels = {LABEL_IMAGE_HASH: content_hash, LABEL_CREATED: self._clock.now().isoformat()}
        image_id = await self._builder.build(recipe, tag=tag, labels=labels)
        attrs = await self._inspect(tag)
        if attrs is None or attrs["Id"] != image_id:
            # The builder broke its contract, or someone retagged under us: do not hand
            # out an image whose identity is unproven.
            raise ImageBuildFailed(
                "the built image is not tagged as expected",
                tag=tag,
                image_id=image_id,
                log=f"{tag} is {'missing' if attrs is None else attrs['Id']}",
            )
        return attrs

    async def get(self, content_hash: str) -> ImageRef | None:
        last_used = await self._usage.last_used(content_hash)
        if last_used is None:
            return None
        flt = {"label": f"{LABEL_IMAGE_HASH}={content_hash}"}
        items: list[dict[str, Any]] = await self._call(lambda: self._api.images(filters=flt))
        return next(_refs(items, {content_hash: last_used}), None)

    async def list_images(self) -> list[ImageRef]:
        entries = dict(await self._usage.entries())  # insertion order = LRU order
        items: list[dict[str, Any]] = await self._call(
            lambda: self._api.images(filters={"label": LABEL_IMAGE_HASH})
        )
        by_hash = {ref.content_hash: ref for ref in _refs(items, entries)}
        return [by_hash[h] for h in entries if h in by_hash]

    async def gc(self, max_age: timedelta) -> list[ImageRef]:
        now = self._clock.now()
        keep = await _live_hashes(self._in_use)
        containers: list[dict[str, Any]] = await self._call(lambda: self._api.containers(all=True))
        used_ids = {c.get("ImageID") for c in containers}
        tracked = await self._usage.entries()
        present = {ref.content_hash: ref for ref in await self.list_images()}
        removed: list[ImageRef] = []
        for content_hash, last in tracked:
            ref = present.get(content_hash)
            if now - last <= max_age or content_hash in keep:
                continue
            if ref is not None and ref.image_id in used_ids:
                continue
            if await self._collect(content_hash, ref, now, max_age) and ref is not None:
                removed.append(ref)
        if self._prune:
            await self._prune_build_cache()
        return removed

    async def _collect(
        self, content_hash: str, ref: ImageRef | None, now: datetime, max_age: timedelta
    ) -> bool:
        """Remove one stale image (or forget a vanished one) under both locks; done?"""
        lock = self._locks.setdefault(content_hash, anyio.Lock())
        async with (
            _hold(lock, wait=False) as mine,
            self._usage.lock(content_hash, wait=False) as ours,
        ):
            if not (mine and ours):
                return False  # being ensured right now
            last = await self._usage.last_used(content_hash)
            if last is None or now - last <= max_age:
                return False  # used since we looked
            if ref is not None and not await self._remove(ref.tag):
                return False
            await self._usage.forget(content_hash)
            return True

    async def _remove(self, tag: str) -> bool:
        def remove() -> bool:
            try:
                self._api.remove_image(tag, noprune=False)
            except docker.errors.NotFound:
                return True  # already gone
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # a container uses it after all
                    return False
                raise
            return True

        return await self._call(remove, image=tag)

    async def _prune_build_cache(self) -> None:
        def prune() -> int | None:
            try:
                result: dict[str, Any] = self._api.prune_builds()
            except docker.errors.APIError as exc:
                # Engines without a build cache endpoint answer 404 (old API) or 501.
                if exc.status_code in (404, 501):
                    return None
                raise
            return int(result.get("SpaceReclaimed") or 0)

        self.last_prune_reclaimed = await self._call(prune)


def _labels(attrs: Mapping[str, Any]) -> dict[str, str]:
    return dict((attrs.get("Config") or {}).get("Labels") or {})


def _refs(items: list[dict[str, Any]], last_used: Mapping[str, datetime]) -> Iterator[ImageRef]:
    """Refs for the image list ``items`` the ledger tracks and that still carry a tag."""
    for item in items:
        labels = item.get("Labels") or {}
        content_hash = labels.get(LABEL_IMAGE_HASH, "")
        tag = _tag_for(item.get("RepoTags"), content_hash)
        if content_hash in last_used and tag is not None:
            yield _ref(item, labels, tag, last_used[content_hash])


async def _live_hashes(source: InUse) -> Collection[str]:
    if callable(source):
        result = source()
        if inspect.isawaitable(result):
            result = await result
        return frozenset(result)
    return frozenset(source)
