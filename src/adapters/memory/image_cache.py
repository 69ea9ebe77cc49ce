"""An in-memory ImageCache: records "built" images without building anything."""

from __future__ import annotations

import hashlib
import inspect
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from datetime import timedelta

import anyio
import anyio.lowlevel

from codeyard.adapters.memory.clock import SystemClock
from codeyard.domain.container import ImageRecipe, ImageRef
from codeyard.domain.errors import ImageBuildFailed
from codeyard.ports.clock import Clock

#: Content hashes live containers use: a collection (read at each ``gc``) or a callable,
#: sync or async, returning one.
InUse = Collection[str] | Callable[[], Collection[str]] | Callable[[], Awaitable[Collection[str]]]


class InMemoryImageCache:
    """A :class:`~codeyard.ports.image_cache.ImageCache` stand-in; nothing is built.

    ``ensure`` "builds" a missing image by waiting ``build_delay_s`` (so concurrent callers
    really overlap) under a per-hash :class:`anyio.Lock`, then records an :class:`ImageRef`.
    A recipe whose ``base_image`` is not in ``base_images`` (when given) fails the way a
    real build would: :class:`ImageBuildFailed` with a log tail. ``build_count(hash)``
    tells how often a hash was built. Times come from ``clock``; ``in_use`` names the
    hashes ``gc`` must keep whatever their age. Single event loop only.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        in_use: InUse = frozenset(),
        base_images: Collection[str] | None = None,
        build_delay_s: float = 0.0,
    ) -> None:
        self._clock = clock or SystemClock()
        self._in_use = in_use
        self._base_images = None if base_images is None else frozenset(base_images)
        self._build_delay_s = build_delay_s
        self._images: dict[str, ImageRef] = {}
        self._use_seq: dict[str, int] = {}  # tie-breaker when two uses share a timestamp
        self._seq = itertools.count()
        self._locks: dict[str, anyio.Lock] = {}
        self._builds: Counter[str] = Counter()

    def build_count(self, content_hash: str) -> int:
        return self._builds[content_hash]

    async def ensure(self, recipe: ImageRecipe) -> ImageRef:
        content_hash = recipe.content_hash()
        lock = self._locks.setdefault(content_hash, anyio.Lock())
        async with lock:
            ref = self._images.get(content_hash)
            if ref is None:
                ref = await self._build(recipe, content_hash)
            now = self._clock.now()
            ref = ref.model_copy(update={"last_used_at": max(now, ref.last_used_at)})
            self._images[content_hash] = ref
            self._use_seq[content_hash] = next(self._seq)
            return ref

    async def get(self, content_hash: str) -> ImageRef | None:
        await anyio.lowlevel.checkpoint()
        return self._images.get(content_hash)

    async def list_images(self) -> list[ImageRef]:
        await anyio.lowlevel.checkpoint()
        return sorted(
            self._images.values(), key=lambda r: (r.last_used_at, self._use_seq[r.content_hash])
        )

    async def gc(self, max_age: timedelta) -> list[ImageRef]:
        keep = await self._live_hashes()
        now = self._clock.now()
        removed = []
        for ref in await self.list_images():
            lock = self._locks.get(ref.content_hash)
            if (
                now - ref.last_used_at > max_age
                and ref.content_hash not in keep
                and not (lock is not None and lock.locked())  # being ensured right now
            ):
                del self._images[ref.content_hash]
                del self._use_seq[ref.content_hash]
                removed.append(ref)
        return removed

    async def _build(self, recipe: ImageRecipe, content_hash: str) -> ImageRef:
        self._builds[content_hash] += 1
        await anyio.sleep(self._build_delay_s)
        if self._base_images is not None and recipe.base_image not in self._base_images:
            raise ImageBuildFailed(
                "image build failed",
                tag=recipe.tag,
                log=f"pull access denied for {recipe.base_image}: image not found",
            )
        now = self._clock.now()
        digest = hashlib.sha256(f"{content_hash}:{self._builds[content_hash]}".encode())
        return ImageRef(
            tag=recipe.tag,
            image_id=f"sha256:{digest.hexdigest()}",
            content_hash=content_hash,
            created_at=now,
            last_used_at=now,
        )

    async def _live_hashes(self) -> frozenset[str]:
        source = self._in_use
        if callable(source):
            result = source()
            if inspect.isawaitable(result):
                result = await result
            return frozenset(result)
        await anyio.lowlevel.checkpoint()
        return frozenset(source)
