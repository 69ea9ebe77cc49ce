"""The seam between the Docker image cache and whatever builds an image for a recipe."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from codeyard.domain.container import ImageRecipe


class ImageBuilder(Protocol):
    """Builds the image of one recipe. Knows nothing of caching, locking or GC.

    Contract: ``build`` produces an image tagged ``tag`` carrying ``labels`` (the cache puts
    the content hash there) and returns its image id. A failed build raises
    ``ImageBuildFailed`` with the tail of the build log in ``fields["log"]`` and leaves no
    image tagged ``tag``. Blocking engine calls run in worker threads.
    """

    async def build(self, recipe: ImageRecipe, *, tag: str, labels: Mapping[str, str]) -> str:
        """Build ``recipe`` as ``tag``; the new image's id."""
        ...
