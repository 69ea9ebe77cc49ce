"""What one worker-manager process is configured with (built from Settings by ``serve``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from codeyard.domain.container import ImageRef
from codeyard.domain.worker import WorkerSpec


class WorkerImageSource(Protocol):
    """The worker image for a spec (``codeyard.app.manager.images.WorkerImages``)."""

    async def ensure(self, spec: WorkerSpec) -> ImageRef: ...

    def key(self, spec: WorkerSpec) -> str: ...


@dataclass(frozen=True)
class ManagerConfig:
    #: This manager's id: the owner label on its containers, ``host`` in the registry.
    owner: str
    #: Environment every worker container starts with: how it reaches the event bus
    #: (``CODEYARD_BACKENDS__EVENT_BUS``, ``CODEYARD_REDIS_URL``) and the model API key.
    worker_env: Mapping[str, str] = field(default_factory=dict)
    #: Extra arguments of ``codeyard-worker`` (``--base-url URL``, ``--api-key-env NAME``).
    worker_args: tuple[str, ...] = ()
    #: Host ports every worker may reach (Redis, a model endpoint on the host).
    host_ports: tuple[int, ...] = ()
    #: ``/etc/hosts`` additions of every worker (``host.docker.internal: host-gateway``).
    extra_hosts: Mapping[str, str] = field(default_factory=dict)
    #: The ``codeyard-worker`` executable inside worker containers (the lean entry point,
    #: :mod:`codeyard.app.worker_cli`).
    worker_executable: str = "codeyard-worker"
    #: The worker's working directory (the agent's workspace; the image's ``/workspace``).
    #: ``None``: the runtime's default (the local-process runtime's own workspace).
    worker_workdir: str | None = "/workspace"
    max_workers: int = 8
    #: How long a create waits for a free slot (creation queue) before QuotaExceeded.
    create_timeout_s: float = 120.0
    heartbeat_s: float = 10.0
    #: A worker silent this long becomes UNHEALTHY.
    heartbeat_timeout_s: float = 30.0
    #: Containers of this owner nobody claims are removed only when older than this.
    orphan_grace_s: float = 60.0
    #: The command service's takeover time: a create left pending by a dead manager is
    #: delivered again after this long, so a half-made worker waits for it (reconcile).
    takeover_s: float = 180.0
    #: How long a command that fails because Postgres or Redis is down is retried before
    #: it is answered ``service_unavailable`` (never past half the takeover time).
    store_outage_s: float = 60.0
    #: How often containers are checked (death) and heartbeats compared with the limit.
    watch_interval_s: float = 2.0
    reconcile_interval_s: float = 30.0
    stop_timeout_s: float = 10.0
    #: Standby containers kept started per warm-pool template.
    warm_pool_size: int = 0
    warm_pool_templates: tuple[WorkerSpec, ...] = ()
    #: Each worker container logs in to Redis as its own ACL user (``worker_env``'s
    #: ``CODEYARD_REDIS_URL`` then has no credentials: each container's gets its login).
    worker_redis_acl: bool = False
    #: Output stream entries kept per worker (approximate trimming); ``None``: unbounded.
    output_maxlen: int | None = None
