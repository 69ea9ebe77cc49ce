"""``codeyard doctor``: is this machine ready for the selected configuration?

Each check says OK / MISSING / WARN / SKIP with a fix. A check is *required* when the
selected backends cannot work without it (Redis for ``event_bus=redis``, Postgres for a
postgres queue or registry, Docker for ``runtime=docker``); only required checks make the
command fail. Every probe has a short timeout and runs concurrently with the others.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import anyio
import anyio.to_thread
import asyncpg
import redis.asyncio as aioredis

from codeyard.adapters.docker.base_image import base_tag
from codeyard.adapters.docker.client import open_docker_client
from codeyard.app.settings import Settings, mask_url, unknown_env_vars

PROBE_TIMEOUT_S = 5.0
CA_CERTS_DIR = Path("/usr/local/share/ca-certificates")
#: OCI runtimes codeyard can use -> what each one brings (none is required: runc suffices).
OCI_RUNTIMES = {
    "runc": "the default",
    "sysbox-runc": "Docker-in-Docker, unprivileged (the docker module)",
    "runsc": "gVisor: a user-space kernel between agents and the host",
}

#: Agent CLI binary -> how to install it (pinned: a plain install may resolve an old cache).
AGENT_CLIS = {
    "claude": "npm install -g @anthropic-ai/claude-code@2.1.330",
    "droid": "npm install -g droid@0.215.0",
    "opencode": "npm install -g opencode-ai@1.18.33",
    "codex": "npm install -g @openai/codex@0.169.0",
    "gemini": "npm install -g @google/gemini-cli@0.61.0",
}


class Status(StrEnum):
    OK = "OK"
    MISSING = "MISSING"
    WARN = "WARN"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    required: bool
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.required and self.status is not Status.OK


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def check_docker(settings: Settings) -> Check:
    required = settings.backends.needs_docker
    where = settings.docker_host or os.environ.get("DOCKER_HOST") or "the default socket"
    try:
        with anyio.fail_after(PROBE_TIMEOUT_S):
            client = await anyio.to_thread.run_sync(
                lambda: open_docker_client(settings.docker_host, max_pool_size=2, timeout_s=3),
                abandon_on_cancel=True,
            )
        version = await anyio.to_thread.run_sync(client.version)
        client.close()
    except Exception as exc:  # any failure means "not usable"; the detail says which
        return Check(
            "Docker engine",
            Status.MISSING,
            required,
            f"no answer at {mask_url(where)} ({_error(exc)})",
            "start the engine (`scripts/dev setup`, or `dockerd &` as root), "
            "or point CODEYARD_DOCKER_HOST / DOCKER_HOST at a running one",
        )
    return Check("Docker engine", Status.OK, required, f"Docker {version.get('Version', '?')}")


async def check_engine_extras(settings: Settings) -> list[Check]:
    """OCI runtimes the engine offers and the base image (both information only)."""
    distro = settings.worker_base_distro
    try:
        with anyio.fail_after(PROBE_TIMEOUT_S):
            client = await anyio.to_thread.run_sync(
                lambda: open_docker_client(settings.docker_host, max_pool_size=2, timeout_s=3),
                abandon_on_cancel=True,
            )
        try:
            info = await anyio.to_thread.run_sync(client.info)
            base = await anyio.to_thread.run_sync(
                lambda: client.api.images(name=base_tag(distro), quiet=True)
            )
        finally:
            client.close()
    except Exception as exc:  # the engine check says why; these two cannot tell
        detail = f"the Docker engine does not answer ({_error(exc)})"
        return [
            Check("OCI runtimes", Status.SKIP, False, detail),
            Check("worker base image", Status.SKIP, False, detail),
        ]
    return [
        runtimes_check(sorted(info.get("Runtimes") or {})),
        base_image_check(distro, bool(base)),
    ]


def runtimes_check(available: list[str]) -> Check:
    missing = [name for name in OCI_RUNTIMES if name not in available]
    detail = f"engine offers: {', '.join(available) or 'none'}"
    if not missing:
        return Check("OCI runtimes", Status.OK, False, detail)
    lacks = "; ".join(f"no {name} ({OCI_RUNTIMES[name]})" for name in missing)
    return Check(
        "OCI runtimes",
        Status.WARN,
        False,
        f"{detail}; {lacks}",
        "optional: install sysbox (github.com/nestybox/sysbox) or gVisor (gvisor.dev) and "
        "register it in /etc/docker/daemon.json, then restart dockerd",
    )


def base_image_check(distro: str, present: bool) -> Check:
    tag = base_tag(distro)
    if present:
        return Check("worker base image", Status.OK, False, tag)
    return Check(
        "worker base image",
        Status.MISSING,
        False,
        f"{tag} not built yet (the first worker builds it: ~30 s, then its image: minutes)",
        "codeyard images build",
    )


def check_redis_server(settings: Settings) -> Check:
    """The embedded mode (``codeyard run`` without a service) starts its own redis-server."""
    if settings.redis_url is not None:
        return Check("redis-server", Status.SKIP, False, "CODEYARD_REDIS_URL set: not needed")
    path = shutil.which("redis-server")
    if path:
        return Check("redis-server", Status.OK, False, f"{path} (for the embedded mode)")
    return Check(
        "redis-server",
        Status.MISSING,
        False,
        "not on PATH: `codeyard run` without a service starts a private one",
        "apt-get install redis-server, or set CODEYARD_REDIS_URL to a running Redis",
    )


async def check_redis(settings: Settings) -> Check:
    required = settings.backends.needs_redis
    if settings.redis_url is None:
        return Check("Redis", Status.SKIP, False, "not selected and CODEYARD_REDIS_URL unset")
    url = settings.secret("redis_url")
    client = aioredis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    try:
        with anyio.fail_after(PROBE_TIMEOUT_S):
            await client.ping()
            info = await client.info("server")
    except Exception as exc:
        return Check(
            "Redis",
            Status.MISSING,
            required,
            f"unreachable at {mask_url(url)} ({_error(exc)})",
            "start Redis there (e.g. `redis-server --port 6379`, or `scripts/dev setup`) "
            "or fix CODEYARD_REDIS_URL",
        )
    finally:
        with anyio.move_on_after(2, shield=True):
            await client.aclose()
    return Check("Redis", Status.OK, required, f"Redis {info.get('redis_version', '?')}")


async def check_postgres(settings: Settings) -> Check:
    required = settings.backends.needs_postgres
    if settings.postgres_dsn is None:
        return Check(
            "PostgreSQL", Status.SKIP, False, "not selected and CODEYARD_POSTGRES_DSN unset"
        )
    dsn = settings.secret("postgres_dsn")
    try:
        with anyio.fail_after(PROBE_TIMEOUT_S):
            conn = await asyncpg.connect(dsn, timeout=3)
            try:
                version = await conn.fetchval("SHOW server_version")
            finally:
                await conn.close()
    except Exception as exc:
        return Check(
            "PostgreSQL",
            Status.MISSING,
            required,
            f"unreachable at {mask_url(dsn)} ({_error(exc)})",
            "start PostgreSQL there (`scripts/dev setup` installs it) "
            "or fix CODEYARD_POSTGRES_DSN (user, password, database)",
        )
    return Check("PostgreSQL", Status.OK, required, f"PostgreSQL {version}")


def check_agent_clis() -> list[Check]:
    checks = []
    for binary, install in AGENT_CLIS.items():
        path = shutil.which(binary)
        if path:
            checks.append(Check(f"agent CLI {binary}", Status.OK, False, path))
        else:
            # Not required yet: until issue #3 runs agents are scripted (offline).
            checks.append(
                Check(f"agent CLI {binary}", Status.MISSING, False, "not on PATH", install)
            )
    return checks


def check_ca_certs(folder: Path = CA_CERTS_DIR) -> Check:
    certs = sorted(p.name for p in folder.rglob("*.crt")) if folder.is_dir() else []
    if certs:
        listing = f"{len(certs)} in {folder}: {', '.join(certs)}"
        return Check("extra CA certificates", Status.OK, False, listing)
    return Check(
        "extra CA certificates",
        Status.MISSING,
        False,
        f"none under {folder}",
        "behind a TLS-intercepting proxy, copy its CA (.crt) there and run "
        "`update-ca-certificates`; worker images need it for HTTPS (npm, PyPI)",
    )


def check_env() -> Check:
    unknown = unknown_env_vars(os.environ)
    if not unknown:
        return Check("CODEYARD_* variables", Status.OK, False, "all recognized")
    return Check(
        "CODEYARD_* variables",
        Status.WARN,
        False,
        f"ignored: {', '.join(unknown)}",
        "check the names with `codeyard config`; groups use `__`, e.g. CODEYARD_BACKENDS__QUEUE",
    )


async def run_checks(settings: Settings) -> list[Check]:
    """Every check, in a stable order; the network probes run concurrently."""
    probes = {"docker": check_docker, "redis": check_redis, "postgres": check_postgres}
    results: dict[str, Check] = {}

    async def probe(name: str) -> None:
        results[name] = await probes[name](settings)

    extras: list[Check] = []

    async def engine_extras() -> None:
        extras.extend(await check_engine_extras(settings))

    async with anyio.create_task_group() as tg:
        for name in probes:
            tg.start_soon(probe, name)
        tg.start_soon(engine_extras)
    return [
        *(results[name] for name in probes),
        *extras,
        check_redis_server(settings),
        *check_agent_clis(),
        check_ca_certs(),
        check_env(),
    ]
