"""DockerImageBuilder: the ImageBuilder seam on a real engine (legacy builder, no registry)."""

from __future__ import annotations

import collections
import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import docker

from codeyard.adapters.docker._mapping import DOCKER_ERRORS
from codeyard.adapters.docker.base_image import (
    BASE_REPOSITORY,
    DISTROS,
    ensure_base_image_sync,
)
from codeyard.adapters.docker.dockerfile import render
from codeyard.domain.container import ImageRecipe
from codeyard.domain.errors import ImageBuildFailed, ServiceUnavailable

#: Where hosts (Debian, Ubuntu) keep locally added CA certificates.
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
_LOG_TAIL_LINES = 60


def read_ca_certs(directory: Path = HOST_CA_DIR) -> dict[str, bytes]:
    """Every ``*.crt`` under ``directory`` (recursively), keyed by a flat file name.

    The default is the host's local CA additions: behind a TLS-intercepting proxy, npm and
    PyPI inside the image fail without them. Their :func:`ca_certs_hash` goes in the recipe.
    """
    if not directory.is_dir():
        return {}
    return {
        str(path.relative_to(directory)).replace("/", "_"): path.read_bytes()
        for path in sorted(directory.rglob("*.crt"))
        if path.is_file()
    }


def wrapper_source_hash(project_root: Path) -> str:
    """A recipe ``wrapper_hash``: the sha256 of the wrapper's sources (``src/`` files and
    ``pyproject.toml``), not of the wheel, whose bytes change with build timestamps."""
    digest = hashlib.sha256()
    paths = [project_root / "pyproject.toml"]
    paths += (p for p in (project_root / "src").rglob("*") if "__pycache__" not in p.parts)
    for path in sorted(p for p in paths if p.is_file()):
        digest.update(str(path.relative_to(project_root)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class DockerImageBuilder:
    """:class:`~codeyard.adapters.docker.image_types.ImageBuilder` with the docker SDK.

    A base named ``codeyard-base:<distro>`` is bootstrapped when missing (see
    :mod:`codeyard.adapters.docker.base_image`) and the build's ``FROM`` is pinned to its
    image id; any other base must already exist in the engine. ``ca_certs`` and
    ``wrapper_wheel`` are the bytes behind ``recipe.ca_certs_hash`` and
    ``recipe.wrapper_hash`` (the generator refuses a mismatch). Builds take minutes: they run
    in worker threads under ``limiter`` and cancelling one abandons its thread, which lets
    the engine finish or fail the build (the engine removes its intermediate containers).
    """

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        ca_certs: Mapping[str, bytes] | None = None,
        wrapper_wheel: Path | None = None,
        limiter: anyio.CapacityLimiter | None = None,
        build_timeout_s: int = 1800,
    ) -> None:
        self._client = client
        self._ca_certs = dict(ca_certs or {})
        self._wheel = wrapper_wheel
        self._limiter = limiter or anyio.CapacityLimiter(2)
        self._timeout_s = build_timeout_s

    async def build(self, recipe: ImageRecipe, *, tag: str, labels: Mapping[str, str]) -> str:
        return await anyio.to_thread.run_sync(
            lambda: self._build_sync(recipe, tag, dict(labels)),
            limiter=self._limiter,
            abandon_on_cancel=True,
        )

    def _build_sync(self, recipe: ImageRecipe, tag: str, labels: dict[str, str]) -> str:
        base = self._base_image(recipe.base_image)
        if recipe.base_image_id and base.startswith("sha256:") and base != recipe.base_image_id:
            # The hash names the recipe's base: building on another would mislabel the image.
            raise ImageBuildFailed(
                "the base image is not the one the recipe names",
                tag=tag,
                expected=recipe.base_image_id,
                found=base,
                log="",
            )
        wheel = None
        if recipe.wrapper_hash:
            if self._wheel is None:
                raise ImageBuildFailed(
                    "the recipe wants the wrapper but no wheel was given", tag=tag, log=""
                )
            wheel = (self._wheel.name, self._wheel.read_bytes())
        context = render(recipe, ca_certs=self._ca_certs, wrapper_wheel=wheel)
        log: collections.deque[str] = collections.deque(maxlen=_LOG_TAIL_LINES)
        image_id: str | None = None
        failed = False
        try:
            stream = self._client.api.build(
                fileobj=io.BytesIO(context.tar()),
                custom_context=True,
                tag=tag,
                labels=labels,
                buildargs={"BASE_IMAGE": base},
                rm=True,
                forcerm=True,
                decode=True,
                timeout=self._timeout_s,
            )
            for chunk in stream:
                failed = failed or (isinstance(chunk, dict) and "error" in chunk)
                image_id = _consume(chunk, log) or image_id
        except DOCKER_ERRORS as exc:
            raise ServiceUnavailable(
                "Docker engine failed during an image build", service="docker", detail=str(exc)
            ) from exc
        if failed or image_id is None:
            # The legacy builder tags only on success, so a failed build leaves no `tag`.
            raise ImageBuildFailed("image build failed", tag=tag, log="".join(log))
        return image_id

    def _base_image(self, base: str) -> str:
        repository, _, distro = base.partition(":")
        if repository == BASE_REPOSITORY and distro in DISTROS:
            return ensure_base_image_sync(self._client, distro=distro)
        return base


def _consume(chunk: Any, log: collections.deque[str]) -> str | None:
    """Record one build-stream message; the image id when it announces the result."""
    if not isinstance(chunk, dict):
        return None
    if "error" in chunk:
        log.append(f"ERROR: {chunk['error']}\n")
        return None
    text = chunk.get("stream")
    if isinstance(text, str):
        log.append(text)
    aux = chunk.get("aux")
    if isinstance(aux, dict) and isinstance(aux.get("ID"), str):
        return str(aux["ID"])
    return None
