"""``codeyard images ls|build|gc`` and ``codeyard gc``: worker images and crashed-run leftovers.

They talk to the Docker engine directly (``CODEYARD_DOCKER_HOST``, else like the docker
CLI), plus, when ``CODEYARD_REDIS_URL`` is set, the image ledger ``codeyard serve`` keeps
for this owner (last uses). The machinery (docker, redis) is imported inside the commands
so ``--help`` stays fast. Exit codes: 0 done, 1 the engine or Redis failed, 2 bad arguments.
See :mod:`codeyard.app.gc` for what is collected and what is always kept.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, TypeVar

import anyio
import typer
from rich.console import Console
from rich.table import Table

from codeyard.app.cli_calls import fail
from codeyard.app.settings import InvalidSettings, Settings
from codeyard.domain.errors import CodeyardError, InvalidInput

if TYPE_CHECKING:
    import docker

    from codeyard.adapters.docker.image_cache import ImageUsage
    from codeyard.app.gc import WorkerImage

T = TypeVar("T")

images_app = typer.Typer(
    name="images", help="Worker images: list, build, collect.", no_args_is_help=True
)

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (machine output).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Only print what would be removed.")]
MaxAge = Annotated[
    float | None,
    typer.Option(
        "--max-age-days",
        min=0,
        help="Remove images unused this long (default: CODEYARD_IMAGE_GC_MAX_AGE_DAYS).",
        show_default=False,
    ),
]


def _settings() -> Settings:
    try:
        return Settings()
    except InvalidSettings as exc:
        fail(f"invalid configuration: {exc}", 2)


def ledger_key(settings: Settings) -> str:
    """The ledger ``codeyard serve`` keeps for this owner (see manager.serve.worker_images)."""
    return f"codeyard:images:{settings.owner}"


@asynccontextmanager
async def _engine(
    settings: Settings,
) -> AsyncIterator[tuple[docker.DockerClient, ImageUsage | None]]:
    """The Docker client and, when Redis is configured, this owner's image ledger."""
    import anyio.to_thread  # noqa: PLC0415 - see module doc
    import redis.asyncio as aioredis  # noqa: PLC0415

    from codeyard.adapters.docker.client import open_docker_client  # noqa: PLC0415
    from codeyard.adapters.redis.image_usage import RedisImageUsage  # noqa: PLC0415

    client = await anyio.to_thread.run_sync(
        lambda: open_docker_client(settings.docker_host, timeout_s=120)
    )
    redis_client = None
    try:
        usage: ImageUsage | None = None
        if settings.redis_url is not None:
            redis_client = aioredis.Redis.from_url(
                settings.secret("redis_url"), socket_connect_timeout=5, socket_timeout=30
            )
            usage = RedisImageUsage(redis_client, key=ledger_key(settings))
        yield client, usage
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            if redis_client is not None:
                await redis_client.aclose()
        client.close()


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn``; codeyard errors become a message and exit 1 (2 for bad input)."""
    try:
        return anyio.run(fn)
    except InvalidInput as exc:
        fail(str(exc), 2)
    except CodeyardError as exc:
        fail(str(exc))


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if at else "-"


def _size(size: int) -> str:
    return f"{size / 1e6:.0f} MB" if size < 1e9 else f"{size / 1e9:.1f} GB"


def _print_images(images: list[WorkerImage], title: str) -> None:
    table = Table(title=title)
    for column in ("TAG", "HASH", "AGENT", "MODULES", "SIZE", "CREATED", "LAST USED"):
        table.add_column(column, no_wrap=column != "MODULES")
    for i in images:
        table.add_row(
            i.tag or "<untagged>",
            i.content_hash[:12],
            i.agent or "-",
            ",".join(i.modules) or "-",
            _size(i.size_bytes),
            _when(i.created_at),
            _when(i.last_used_at),
        )
    Console().print(table)


@images_app.command("ls")
def images_ls(as_json: AsJson = False) -> None:
    """List the worker images on the engine (last use from the ledger when Redis is set)."""
    from codeyard.app.gc import list_worker_images  # noqa: PLC0415 - see module doc

    settings = _settings()

    async def run() -> list[WorkerImage]:
        async with _engine(settings) as (client, usage):
            return await list_worker_images(client, usage)

    images = _run(run)
    if as_json:
        typer.echo(json.dumps([i.as_json() for i in images], indent=2))
    else:
        _print_images(images, "codeyard worker images")


@images_app.command("build")
def images_build(
    agent: Annotated[str, typer.Option(help="Provider whose CLI the image holds.")] = "claude",
    module: Annotated[
        list[str] | None,
        typer.Option("--module", help="A module to layer in (repeat; default: git)."),
    ] = None,
) -> None:
    """Build (or find) the worker image for an agent and modules; print its tag."""
    from codeyard.app.manager.images import docker_worker_images  # noqa: PLC0415
    from codeyard.domain.worker import WorkerSpec  # noqa: PLC0415

    try:
        spec = WorkerSpec.model_validate(
            {"agent": agent, **({"modules": module} if module else {})}
        )
    except (InvalidInput, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    settings = _settings()
    started = time.monotonic()

    async def run() -> str:
        from codeyard.adapters.docker.image_cache import LocalImageUsage  # noqa: PLC0415

        async with _engine(settings) as (client, ledger):
            usage = ledger or LocalImageUsage()
            images = await docker_worker_images(settings, client, usage=usage)
            return (await images.ensure(spec)).tag

    tag = _run(run)
    Console().print(f"{tag}  ({time.monotonic() - started:.1f} s)", highlight=False)


async def _gc_images(
    settings: Settings, max_age_days: float | None, *, dry_run: bool
) -> list[WorkerImage]:
    from codeyard.app.gc import gc_images  # noqa: PLC0415 - see module doc

    days = settings.image_gc_max_age_days if max_age_days is None else max_age_days
    async with _engine(settings) as (client, usage):
        return await gc_images(client, usage, max_age=timedelta(days=days), dry_run=dry_run)


def _print_removed(images: list[WorkerImage], *, dry_run: bool) -> None:
    verb = "would remove" if dry_run else "removed"
    if not images:
        Console().print(f"images: nothing {'to remove' if dry_run else 'removed'}")
    for i in images:
        Console().print(f"{verb} image {i.tag or i.image_id} ({i.content_hash[:12]})")


@images_app.command("gc")
def images_gc(max_age_days: MaxAge = None, dry_run: DryRun = False) -> None:
    """Remove worker images unused for N days that no container uses."""
    settings = _settings()
    removed = _run(lambda: _gc_images(settings, max_age_days, dry_run=dry_run))
    _print_removed(removed, dry_run=dry_run)


def gc(max_age_days: MaxAge = None, dry_run: DryRun = False) -> None:
    """Remove what crashed `codeyard run`s of this host left, then stale images.

    Leftovers: containers whose owner is `<owner>-run-<pid>` with that pid dead (older than
    60 s), and their networks. `codeyard serve` owners are never touched.
    """
    from codeyard.app.gc import gc_leftovers  # noqa: PLC0415 - see module doc

    settings = _settings()

    async def run() -> None:
        async with _engine(settings) as (client, _):
            report = await gc_leftovers(client, settings.owner, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        out = Console()
        for c in report.containers:
            out.print(f"{verb} container {c.name} (owner {c.owner}, pid {c.pid} gone)")
        for name in report.networks:
            out.print(f"{verb} network {name}")
        for warning in report.warnings:
            out.print(f"[yellow]warning:[/] {warning}", highlight=False)
        if not report.containers and not report.networks:
            out.print("containers: no leftovers of crashed runs")
        _print_removed(await _gc_images(settings, max_age_days, dry_run=dry_run), dry_run=dry_run)

    _run(run)


def register(app: typer.Typer) -> None:
    """Add ``images ls|build|gc`` and ``gc`` to the ``codeyard`` app."""
    app.add_typer(images_app)
    app.command("gc")(gc)
