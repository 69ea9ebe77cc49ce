"""The ``manager`` settings group (``CODEYARD_MANAGER__*``) and the ManagerConfig it gives.

Workers run in containers: what the manager reaches at ``localhost`` (Redis, a model
server) a container reaches at ``host.docker.internal`` (mapped to the host gateway), and
only on ports the worker network's firewall lets through. :func:`manager_config` makes that
translation, so one ``CODEYARD_REDIS_URL`` serves both sides; a service that is not on
the host needs nothing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from codeyard.domain.errors import InvalidInput
from codeyard.domain.worker import WorkerSpec

from .config import ManagerConfig

HOST_ALIAS = "host.docker.internal"
API_KEY_ENV = "AGENT_API_KEY"
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})


class InvalidManagerSettings(InvalidInput):
    """The manager settings cannot give workers a way to reach a service."""

    code = "invalid_manager_settings"


class ManagerSettings(BaseModel):
    """Settings of ``codeyard serve``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    worker_redis_url: SecretStr | None = Field(
        default=None,
        description="Redis URL as worker containers see it. Unset: `redis_url` with a "
        "loopback host replaced by `host.docker.internal`.",
    )
    worker_redis_acl: bool = Field(
        default=True,
        description="Each worker container logs in to Redis as its own ACL user, limited to "
        "its own streams, instead of with the manager's credentials (the user and password "
        "in the workers' Redis URL are dropped; it must be the manager's Redis server). "
        "Needs a manager Redis user allowed `ACL` (a managed Redis may refuse it: then "
        "`false`, and workers get the manager's URL as before).",
    )
    agent_base_url: str | None = Field(
        default=None,
        description="Model API base URL the workers' agent CLIs use (a gateway, a proxy, the "
        "scripted model server). Unset: the vendor's API.",
    )
    agent_api_key: SecretStr | None = Field(
        default=None, description="Model API key given to the workers' agent CLIs."
    )
    warm_pool_size: int = Field(
        default=0, ge=0, description="Started standby containers kept per warm-pool agent."
    )
    warm_pool_agents: tuple[str, ...] = Field(
        default=("claude",),
        description='Agents (default specs) the warm pool keeps, as JSON: `["claude"]`.',
    )
    create_timeout_s: float = Field(
        default=120.0, gt=0, description="How long a create waits for a free worker slot."
    )
    heartbeat_s: float = Field(default=10.0, gt=0, description="Worker heartbeat interval.")
    orphan_grace_s: float = Field(
        default=60.0, ge=0, description="Unclaimed containers older than this are removed."
    )
    reconcile_interval_s: float = Field(
        default=30.0, gt=0, description="How often the registry and containers are compared."
    )
    watch_interval_s: float = Field(
        default=2.0, gt=0, description="How often worker containers are checked for death."
    )
    concurrency: int = Field(default=16, ge=1, description="Commands handled at once.")
    takeover_s: float = Field(
        default=180.0,
        gt=0,
        description="A command pending this long on a manager that went silent is taken "
        "over by another (or by its own restart). A manager keeps the commands it is still "
        "handling alive, so a slow one (an image build) is neither taken over nor poisoned. "
        "Lower: faster fail-over; also bounds `store_outage_s` (half of it).",
    )
    store_outage_s: float = Field(
        default=60.0,
        ge=0,
        description="A command that fails because Postgres or Redis is down is retried "
        "with back-off this long (never past half of `takeover_s`), then answered "
        "`service_unavailable`. `0`: answered at once.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of the Prometheus `/metrics` endpoint. Unset: no endpoint; `0`: "
        "any free port (logged).",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Address the metrics endpoint listens on (`0.0.0.0` for a scraper "
        "outside this host).",
    )


def container_url(url: str, *, setting: str) -> tuple[str, int | None]:
    """``url`` as a container sees it, and the host port it needs (loopback hosts only)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        raise InvalidManagerSettings(
            f"workers cannot reach a unix socket: set {setting} to a TCP URL", setting=setting
        )
    host = parts.hostname or ""
    if host not in _LOOPBACK:
        return url, None
    port = parts.port or {"redis": 6379, "rediss": 6379, "https": 443}.get(parts.scheme, 80)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{HOST_ALIAS}:{port}" if userinfo else f"{HOST_ALIAS}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), port


def without_userinfo(url: str) -> str:
    """``url`` without its user and password."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def manager_config(settings: Any, **overrides: Any) -> ManagerConfig:
    """The ManagerConfig of ``settings`` (a :class:`codeyard.app.settings.Settings`)."""
    manager: ManagerSettings = settings.manager
    if manager.worker_redis_url is not None:
        redis_url, redis_port = manager.worker_redis_url.get_secret_value(), None
    else:
        redis_url, redis_port = container_url(
            settings.secret("redis_url"), setting="CODEYARD_MANAGER__WORKER_REDIS_URL"
        )
    if manager.worker_redis_acl:  # each container's URL gets its own login (launch.py)
        redis_url = without_userinfo(redis_url)
    env = {
        "CODEYARD_BACKENDS__EVENT_BUS": "redis",
        "CODEYARD_REDIS_URL": redis_url,
        # worker_main reads it from its own env: set on the manager only, it never applied.
        "CODEYARD_WORKER_REDIS_OUTAGE_S": str(settings.worker_redis_outage_s),
    }
    ports = {redis_port} if redis_port else set()
    args: list[str] = []
    if manager.agent_base_url:
        base_url, model_port = container_url(
            manager.agent_base_url, setting="CODEYARD_MANAGER__AGENT_BASE_URL"
        )
        args += ["--base-url", base_url]
        if model_port:
            ports.add(model_port)
    if manager.agent_api_key is not None:
        env[API_KEY_ENV] = manager.agent_api_key.get_secret_value()
        args += ["--api-key-env", API_KEY_ENV]
    values: dict[str, Any] = {
        "owner": settings.owner,
        "worker_env": env,
        "worker_args": tuple(args),
        "host_ports": tuple(sorted(ports)),
        "extra_hosts": {HOST_ALIAS: "host-gateway"},
        "max_workers": settings.max_workers,
        "create_timeout_s": manager.create_timeout_s,
        "heartbeat_s": manager.heartbeat_s,
        "heartbeat_timeout_s": settings.worker_heartbeat_timeout_s,
        "orphan_grace_s": manager.orphan_grace_s,
        "takeover_s": manager.takeover_s,
        "store_outage_s": manager.store_outage_s,
        "watch_interval_s": manager.watch_interval_s,
        "reconcile_interval_s": manager.reconcile_interval_s,
        "warm_pool_size": manager.warm_pool_size,
        "worker_redis_acl": manager.worker_redis_acl,
        "warm_pool_templates": tuple(WorkerSpec(agent=a) for a in manager.warm_pool_agents),
    }
    values.update(overrides)
    return ManagerConfig(**values)
