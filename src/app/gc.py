"""``codeyard images ls|gc`` and ``codeyard gc``: worker images and leftovers of crashed runs.

Images are read from the engine itself (the ``dev.codeyard.image-hash`` label), so listing
and collecting work without the ledger; the ledger (Redis, per owner, as ``codeyard serve``
keeps it) only adds last uses. An image is stale when unused for ``max_age``: by its last
use when the ledger knows it (removed through :meth:`DockerImageCache.gc`, which locks
against a concurrent ``ensure``), else by its ``dev.codeyard.created-at`` label. An image
any container (running or stopped) uses is never a candidate, and the engine refuses (409)
to remove one a container started using meanwhile.

Crashed runs: an embedded run labels its containers ``<owner>-run-<pid>`` (see
:mod:`codeyard.app.embedded`). A container whose owner is such an owner of THIS host
(``<owner>`` = this instance's owner) whose pid is no longer alive, and that is older than
``MIN_AGE`` (a run that just started may not be visible in ``/proc`` races), is a leftover.
Owners without the ``-run-<pid>`` suffix (``codeyard serve``) are never touched: their
manager reconciles them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio.to_thread
import docker
import docker.errors

from codeyard.adapters.docker._mapping import DOCKER_ERRORS, parse_time, translate_error
from codeyard.adapters.docker.dockerfile import LABEL_AGENT, LABEL_MODULES
from codeyard.adapters.docker.image_cache import DockerImageCache, ImageUsage
from codeyard.adapters.docker.networks import LABEL_POLICY, remove_networks
from codeyard.domain.container import LABEL_CREATED, LABEL_IMAGE_HASH, LABEL_OWNER, ImageRecipe
from codeyard.domain.errors import CodeyardError, ImageBuildFailed

T = TypeVar("T")

#: A container younger than this is never a leftover (its run may be starting up).
MIN_AGE = timedelta(seconds=60)


@dataclass(frozen=True)
class WorkerImage:
    """One worker image on the engine; ``last_used_at`` is ``None`` when no ledger knows it."""

    tag: str | None
    image_id: str
    content_hash: str
    agent: str
    modules: tuple[str, ...]
    size_bytes: int
    created_at: datetime | None
    last_used_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "image_id": self.image_id,
            "content_hash": self.content_hash,
            "agent": self.agent,
            "modules": list(self.modules),
            "size_bytes": self.size_bytes,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "last_used_at": self.last_used_at.isoformat() if self.last_used_at else None,
        }


@dataclass(frozen=True)
class Leftover:
    """A container of a dead embedded run."""

    container_id: str
    name: str
    owner: str
    pid: int


@dataclass(frozen=True)
class GcReport:
    containers: list[Leftover] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    images: list[WorkerImage] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _stamp(labels: Mapping[str, str], created: object) -> datetime | None:
    """The codeyard ``created-at`` label; else the engine's time (epoch int or RFC 3339)."""
    with contextlib.suppress(ValueError):
        stamped = datetime.fromisoformat(labels.get(LABEL_CREATED, ""))
        if stamped.tzinfo is not None:
            return stamped
    if isinstance(created, int):
        return datetime.fromtimestamp(created, UTC)
    return parse_time(created) if isinstance(created, str) else None


def _tag(tags: list[str] | None, content_hash: str) -> str | None:
    real = [t for t in tags or [] if t != "<none>:<none>"]
    return next((t for t in real if t.endswith(":" + content_hash[:16])), real[0] if real else None)


def worker_image(item: Mapping[str, Any], last_used: datetime | None = None) -> WorkerImage:
    """A WorkerImage from one item of the engine's image list."""
    labels: Mapping[str, str] = item.get("Labels") or {}
    content_hash = labels.get(LABEL_IMAGE_HASH, "")
    modules = labels.get(LABEL_MODULES, "")
    return WorkerImage(
        tag=_tag(item.get("RepoTags"), content_hash),
        image_id=str(item["Id"]),
        content_hash=content_hash,
        agent=labels.get(LABEL_AGENT, ""),
        modules=tuple(m for m in modules.split(",") if m),
        size_bytes=int(item.get("Size") or 0),
        created_at=_stamp(labels, item.get("Created")),
        last_used_at=last_used,
    )


async def _blocking(fn: Callable[[], T]) -> T:
    try:
        return await anyio.to_thread.run_sync(fn)
    except DOCKER_ERRORS as exc:
        raise translate_error(exc) from exc


async def list_worker_images(
    client: docker.DockerClient, usage: ImageUsage | None = None
) -> list[WorkerImage]:
    """Every image carrying the hash label, oldest first; last uses from ``usage``."""
    items: list[dict[str, Any]] = await _blocking(
        lambda: client.api.images(filters={"label": LABEL_IMAGE_HASH})
    )
    last = dict(await usage.entries()) if usage is not None else {}
    images = [
        worker_image(i, last.get((i.get("Labels") or {}).get(LABEL_IMAGE_HASH, ""))) for i in items
    ]
    epoch = datetime.min.replace(tzinfo=UTC)
    return sorted(images, key=lambda i: (i.created_at or epoch, i.content_hash))


def stale_images(
    images: list[WorkerImage], used_ids: set[str], *, now: datetime, max_age: timedelta
) -> list[WorkerImage]:
    """The images unused for ``max_age`` (last use, else creation) that no container uses.

    An image whose age cannot be told is kept: nothing is removed that cannot be dated.
    """
    stale = []
    for image in images:
        seen = image.last_used_at or image.created_at
        if image.image_id not in used_ids and seen is not None and now - seen > max_age:
            stale.append(image)
    return stale


class _NoBuilder:
    """gc never builds; an ``ensure`` through this cache would be a bug."""

    async def build(self, recipe: ImageRecipe, *, tag: str, labels: Mapping[str, str]) -> str:
        raise ImageBuildFailed("this cache only collects images", tag=tag, log="")


async def gc_images(
    client: docker.DockerClient,
    usage: ImageUsage | None,
    *,
    max_age: timedelta,
    now: datetime | None = None,
    dry_run: bool = False,
) -> list[WorkerImage]:
    """Remove (or with ``dry_run`` only list) the stale worker images; those removed."""
    now = now or datetime.now(UTC)
    images = await list_worker_images(client, usage)
    containers: list[dict[str, Any]] = await _blocking(lambda: client.api.containers(all=True))
    candidates = stale_images(
        images, {str(c.get("ImageID")) for c in containers}, now=now, max_age=max_age
    )
    if dry_run or not candidates:
        return candidates
    removed: list[WorkerImage] = []
    if usage is not None and any(i.last_used_at is not None for i in candidates):
        cache = DockerImageCache(client, _NoBuilder(), usage)
        gone = {ref.content_hash for ref in await cache.gc(max_age)}
        removed += [i for i in candidates if i.content_hash in gone]
    for image in candidates:
        if image.last_used_at is None and await _blocking(
            functools.partial(_remove_image, client, image)
        ):
            removed.append(image)
    return removed


def _remove_image(client: docker.DockerClient, image: WorkerImage) -> bool:
    try:
        client.api.remove_image(image.tag or image.image_id, noprune=False)
    except docker.errors.NotFound:
        return True
    except docker.errors.APIError as exc:
        if exc.status_code == 409:  # a container uses it after all (or another tag)
            return False
        raise
    return True


def embedded_pid(owner: str, host_owner: str) -> int | None:
    """The pid of an embedded run of ``host_owner`` named by ``owner``; else ``None``."""
    match = re.fullmatch(re.escape(host_owner) + r"-run-([1-9][0-9]{0,9})", owner)
    return int(match.group(1)) if match else None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def leftovers(
    containers: Sequence[Mapping[str, Any]],
    host_owner: str,
    *,
    now: datetime,
    alive: Callable[[int], bool] = pid_alive,
    min_age: timedelta = MIN_AGE,
) -> list[Leftover]:
    """The containers of dead embedded runs of ``host_owner`` older than ``min_age``.

    A container whose age cannot be told is kept.
    """
    found = []
    for item in containers:
        labels: Mapping[str, str] = item.get("Labels") or {}
        owner = labels.get(LABEL_OWNER, "")
        pid = embedded_pid(owner, host_owner)
        created = _stamp(labels, item.get("Created"))
        if pid is None or created is None or now - created <= min_age or alive(pid):
            continue
        names = item.get("Names") or [""]
        found.append(Leftover(str(item["Id"]), str(names[0]).lstrip("/"), owner, pid))
    return found


async def gc_leftovers(
    client: docker.DockerClient,
    host_owner: str,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    alive: Callable[[int], bool] = pid_alive,
) -> GcReport:
    """Remove the containers and networks of dead embedded runs of ``host_owner``."""
    now = now or datetime.now(UTC)
    containers: list[dict[str, Any]] = await _blocking(
        lambda: client.api.containers(all=True, filters={"label": LABEL_OWNER})
    )
    found = leftovers(containers, host_owner, now=now, alive=alive)
    networks: list[dict[str, Any]] = await _blocking(
        lambda: client.api.networks(filters={"label": [LABEL_POLICY]})
    )
    dead = {c.owner for c in found}
    for net in networks:
        owner = (net.get("Labels") or {}).get(LABEL_OWNER, "")
        pid = embedded_pid(owner, host_owner)
        if pid is not None and not alive(pid):
            dead.add(owner)
    report = GcReport(containers=found)
    if dry_run:
        report.networks.extend(
            str(n["Name"]) for n in networks if (n.get("Labels") or {}).get(LABEL_OWNER) in dead
        )
        return report
    for leftover in found:
        await _blocking(functools.partial(_remove_container, client, leftover.container_id))
    for owner in sorted(dead):
        try:
            report.networks.extend(await remove_networks(client, owner=owner))
        except CodeyardError as exc:  # iptables missing, say: the next run retries
            report.warnings.append(f"networks of {owner} not removed: {exc}")
    return report


def _remove_container(client: docker.DockerClient, container_id: str) -> None:
    with contextlib.suppress(docker.errors.NotFound):
        client.api.remove_container(container_id, force=True, v=True)
