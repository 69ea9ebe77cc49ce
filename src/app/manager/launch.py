"""From a WorkerSpec to a worker container, and from a dead container to a failed result.

Pure functions (no I/O): the manager, the warm pool and the reconciler share them.

* Every worker container runs ``codeyard-worker --standby SLOT``: it waits for a
  :class:`~codeyard.domain.worker_io.WorkerAssignment` on ``worker:standby:{SLOT}``. A cold
  create uses the worker id as the slot; a warm-pool container has a ``pool-*`` slot.
* Network: a worker must reach the event bus (Redis) on the host, so EGRESS and ALLOWLIST
  both become an ALLOWLIST container network holding the manager's ``host_ports`` plus the
  spec's ``allowed_hosts`` ports; everything else on the host stays firewalled. NONE is
  refused: a worker without any network cannot read its input stream.
* ``allowed_hosts`` name host services: ``PORT`` or ``HOST:PORT`` where HOST is the host
  itself (``host``, ``localhost``, ``127.0.0.1``, ``host.docker.internal``). Outside hosts
  need no entry: EGRESS reaches the internet already.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

from codeyard.domain.agent import AgentResult, ResultStatus
from codeyard.domain.container import (
    LABEL_IMAGE_HASH,
    LABEL_PREFIX,
    LABEL_WORKER,
    ContainerInfo,
    ContainerSpec,
    ExitReason,
)
from codeyard.domain.errors import InvalidRequest
from codeyard.domain.secrets import check_env_names
from codeyard.domain.worker import Module, NetworkPolicy, WorkerSpec
from codeyard.domain.worker_access import WorkerLogin

from .config import ManagerConfig
from .hardening import read_only_root, writable_mounts

LABEL_ROLE = LABEL_PREFIX + "role"
ROLE_WORKER = "worker"
ROLE_STANDBY = "standby"
#: Warm-pool slots start with it; a cold create's slot is its worker id.
POOL_SLOT_PREFIX = "pool-"
REDIS_URL_ENV = "CODEYARD_REDIS_URL"
_HOST_NAMES = frozenset({"host", "localhost", "127.0.0.1", "host.docker.internal"})


def host_ports(allowed_hosts: tuple[str, ...]) -> tuple[int, ...]:
    """The host ports ``allowed_hosts`` names; InvalidRequest for anything else."""
    ports: set[int] = set()
    for entry in allowed_hosts:
        host, _, port = entry.rpartition(":")
        if (host and host not in _HOST_NAMES) or not port.isdigit() or not 0 < int(port) < 65536:
            raise InvalidRequest(
                "allowed_hosts entries are PORT or HOST:PORT of a host service "
                f"(HOST one of {', '.join(sorted(_HOST_NAMES))})",
                entry=entry,
            )
        ports.add(int(port))
    return tuple(sorted(ports))


def check_spec(spec: WorkerSpec, *, credentials: bool = False) -> None:
    """Refuse what a manager cannot run, before anything is registered or built.
    ``credentials``: whether the manager has a credential store for ``spec.secrets``."""
    if spec.network is NetworkPolicy.NONE:
        raise InvalidRequest(
            "a worker needs the event bus: network=none cannot work; use allowlist",
            network=spec.network.value,
        )
    if spec.secrets and not credentials:
        raise InvalidRequest(
            "secret references need a credential store, which this manager does not have",
            secrets=[s.name for s in spec.secrets],
        )
    check_env_names(ref.env for ref in spec.secrets)
    host_ports(spec.allowed_hosts)


def worker_container_spec(
    spec: WorkerSpec,
    *,
    image: str,
    image_hash: str,
    slot: str,
    config: ManagerConfig,
    credentials: bool = False,
    login: WorkerLogin | None = None,
) -> ContainerSpec:
    """The container of a worker (or standby slot) for ``spec``; its secrets are added by
    :func:`codeyard.app.manager.secrets.with_secrets` (``credentials=True``). ``login``: the
    worker's own Redis login, put into its ``CODEYARD_REDIS_URL`` (``worker_redis_acl``)."""
    check_spec(spec, credentials=credentials)
    ports = tuple(sorted({*config.host_ports, *host_ports(spec.allowed_hosts)}))
    role = ROLE_STANDBY if slot.startswith(POOL_SLOT_PREFIX) else ROLE_WORKER
    command = (
        config.worker_executable,
        "--standby",
        slot,
        "--provider",
        spec.agent,
        "--heartbeat-s",
        f"{config.heartbeat_s:g}",
        *config.worker_args,
    )
    return ContainerSpec(
        image=image,
        command=command,
        env=worker_env(config, login),
        labels={**spec.labels, LABEL_WORKER: slot, LABEL_IMAGE_HASH: image_hash, LABEL_ROLE: role},
        workdir=config.worker_workdir,
        resources=spec.resources,
        read_only_root=read_only_root(spec),
        mounts=writable_mounts(spec, config.worker_workdir),
        network=NetworkPolicy.ALLOWLIST if ports else NetworkPolicy.EGRESS,
        allowed_host_ports=ports,
        extra_hosts=dict(config.extra_hosts),
        runtime=spec.runtime,
        docker_in_docker=Module.DOCKER in spec.modules,
        allow_insecure_dind=spec.allow_insecure_dind,
    )


def worker_env(config: ManagerConfig, login: WorkerLogin | None) -> dict[str, str]:
    """The worker's env: with ``worker_redis_acl`` its Redis URL carries its own login
    (``config.worker_env``'s URL has no credentials then), never the manager's."""
    env = dict(config.worker_env)
    if login is None:
        if config.worker_redis_acl:
            msg = "worker_redis_acl: a worker container needs its own login"
            raise ValueError(msg)
        return env
    parts = urlsplit(env[REDIS_URL_ENV])
    user, password = (
        quote(login.username, safe=""),
        quote(login.password.get_secret_value(), safe=""),
    )
    netloc = f"{user}:{password}@{parts.netloc.rpartition('@')[2]}"
    env[REDIS_URL_ENV] = urlunsplit(parts._replace(netloc=netloc))
    return env


def login_slot(worker_id: str, info: ContainerInfo | None, known: str | None) -> str | None:
    """The slot of ``worker_id``'s login: its container's ``LABEL_WORKER`` (a claimed
    standby's ``pool-*``, else the worker id), else ``known`` (seen earlier), else the
    worker id as a cold create's; ``None`` when it may be a pool slot no one saw."""
    slot = (info.labels.get(LABEL_WORKER) if info is not None else None) or known
    if slot is None and not worker_id.startswith(POOL_SLOT_PREFIX):
        slot = worker_id
    return slot


def death_reason(info: ContainerInfo | None) -> str:
    """``container_oom``, ``container_terminated`` (143), ``container_killed`` (137),
    ``container_exited_<code>``, or ``container_vanished`` when it is gone."""
    if info is None:
        return "container_vanished"
    if info.reason is ExitReason.OOM or (info.oom_killed and info.exit_code == 137):
        return "container_oom"
    if info.exit_code == 143:
        return "container_terminated"
    if info.exit_code == 137:
        return "container_killed"
    return f"container_exited_{info.exit_code}"


def death_result(provider: str, info: ContainerInfo | None) -> AgentResult:
    """The failed result the manager publishes for a worker whose container died."""
    reason = death_reason(info)
    code = None if info is None else info.exit_code
    return AgentResult(
        status=ResultStatus.ERROR,
        provider=provider,
        error=f"the worker container ended unexpectedly ({reason})",
        terminal_reason=reason,
        exit_code=code,
    )
