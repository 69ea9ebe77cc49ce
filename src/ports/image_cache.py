"""ImageCache: worker images built from a recipe, identified by content hash."""

from __future__ import annotations

from datetime import timedelta
from typing import Protocol, runtime_checkable

from codeyard.domain.container import ImageRecipe, ImageRef


@runtime_checkable
class ImageCache(Protocol):
    """Builds each recipe at most once and forgets images nobody used for a while.

    Contract:
    - ``ensure`` returns an image whose ``content_hash`` equals ``recipe.content_hash()``,
      building it when missing. Concurrent ``ensure`` calls for one recipe build it once.
      Every call records a use (``last_used_at`` = now). Build failure raises
      ``ImageBuildFailed`` with the build log tail in ``fields["log"]``.
    - ``gc`` removes images whose ``last_used_at`` is older than ``max_age`` and that no
      live container uses; it returns what it removed. Safe to run concurrently with
      ``ensure``: an image being ensured is never removed under it.
    - Cancelling ``ensure`` may leave a finished image behind; never a half-tagged one.
    """

    async def ensure(self, recipe: ImageRecipe) -> ImageRef:
        """Return the image for ``recipe``, building it if needed."""
        ...

    async def get(self, content_hash: str) -> ImageRef | None:
        """The cached image with this hash, or ``None``. Does not count as a use."""
        ...

    async def list_images(self) -> list[ImageRef]:
        """Every cached image, least recently used first."""
        ...

    async def gc(self, max_age: timedelta) -> list[ImageRef]:
        """Remove images unused for longer than ``max_age``; return them."""
        ...
