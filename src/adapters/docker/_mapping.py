"""Pure translations between the domain and Docker's API shapes (no I/O here)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import docker.errors
import docker.types
import requests.exceptions

from codeyard.domain.container import ContainerInfo, ContainerSpec, ContainerState, exit_reason
from codeyard.domain.errors import (
    AlreadyExists,
    CodeyardError,
    Conflict,
    ContainerNotFound,
    ImageNotFound,
    InvalidRequest,
    RuntimeNotAvailable,
    ServiceUnavailable,
)
from codeyard.domain.worker import NetworkPolicy

_MIB = 1024 * 1024

# --- ContainerSpec -> docker-py `containers.create` keyword arguments ---------------------


def create_kwargs(
    spec: ContainerSpec, labels: Mapping[str, str], *, network_mode: str | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``DockerClient.containers.create`` implementing ``spec``.

    Network: ``network_mode`` when given (the runtime passes the codeyard network that
    :mod:`codeyard.adapters.docker.networks` firewalls for ``spec``); otherwise ``none`` for
    ``NONE`` and the default bridge, where host services are reachable, for the others.

    tmpfs mounts get ``exec`` (Docker defaults to ``noexec``) because agents run what they
    build there (``go test`` binaries in /tmp, ``npx`` in $HOME); ``nosuid,nodev`` stay.
    When ``spec.user`` is numeric (``UID[:GID]``) the tmpfs belongs to it: runc gives a tmpfs
    the mode of the image directory it covers, so over a root-owned 0755 directory the
    worker could not write without ``uid=``/``gid=``.
    ``resources.disk_mb`` is not applied: overlay2 on ext4 has no per-container size limit.
    """
    res = spec.resources
    tmpfs: dict[str, str] = {}
    mounts: list[docker.types.Mount] = []
    owner = _numeric_owner(spec.user)
    for m in spec.mounts:
        if m.source is None and not m.volume:
            opts = ["exec", *owner]
            if m.tmpfs_size_mb is not None:
                opts.append(f"size={m.tmpfs_size_mb}m")
            if m.read_only:
                opts.append("ro")
            tmpfs[m.target] = ",".join(opts)
        else:
            bind = m.source is not None and m.source.startswith("/")
            kind: Literal["bind", "volume"] = "bind" if bind else "volume"
            mounts.append(docker.types.Mount(m.target, m.source, type=kind, read_only=m.read_only))
    # None keeps the image's entrypoint; [""] clears it, as `docker run --entrypoint ""` does.
    entrypoint = None if spec.entrypoint is None else list(spec.entrypoint) or [""]
    kwargs: dict[str, Any] = {
        "image": spec.image,
        "name": spec.name,
        "command": list(spec.command) or None,
        "entrypoint": entrypoint,
        "environment": dict(spec.env),
        "labels": dict(labels),
        "working_dir": spec.workdir,
        "user": spec.user,
        "mem_limit": res.memory_mb * _MIB,
        "memswap_limit": res.memory_mb * _MIB,  # equal: no swap on top of the limit
        "nano_cpus": round(res.cpus * 1e9),
        "pids_limit": res.pids,
        "cap_drop": ["ALL"] if spec.cap_drop_all else None,
        "security_opt": ["no-new-privileges"] if spec.no_new_privileges else None,
        "read_only": spec.read_only_root,
        "tmpfs": tmpfs or None,
        "mounts": mounts or None,
        "network_mode": network_mode
        or ("none" if spec.network is NetworkPolicy.NONE else "bridge"),
        "runtime": spec.runtime,  # checked and completed by runtimes.apply_runtime
        "init": spec.init,
        "extra_hosts": dict(spec.extra_hosts) or None,
    }
    return {k: v for k, v in kwargs.items() if v is not None}


_NUMERIC_USER_RE = re.compile(r"^(?P<uid>\d+)(?::(?P<gid>\d+))?$")


def _numeric_owner(user: str | None) -> list[str]:
    """tmpfs ``uid=``/``gid=`` options for a numeric ``user``; nothing for a name."""
    match = _NUMERIC_USER_RE.match(user or "")
    if match is None:
        return []
    return [f"uid={match['uid']}"] + ([f"gid={match['gid']}"] if match["gid"] else [])


# --- Docker JSON -> ContainerInfo ---------------------------------------------------------

_TIME_RE = re.compile(
    r"^(?P<base>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))?(?P<tz>Z|[+-]\d\d:\d\d)$"
)
_ENDED = frozenset({ContainerState.EXITED, ContainerState.DEAD})


def parse_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 time with nanoseconds, as aware UTC; the zero time means ``None``."""
    if not value or value.startswith("0001-01-01"):
        return None
    match = _TIME_RE.match(value)
    if match is None:
        return None
    frac = (match["frac"] or "")[:6].ljust(6, "0")
    tz = "+00:00" if match["tz"] == "Z" else match["tz"]
    return datetime.fromisoformat(f"{match['base']}.{frac}{tz}").astimezone(UTC)


def _first_ip(network_settings: Mapping[str, Any] | None) -> str | None:
    settings = network_settings or {}
    for net in (settings.get("Networks") or {}).values():
        if net and net.get("IPAddress"):
            return str(net["IPAddress"])
    return settings.get("IPAddress") or None


def info_from_inspect(attrs: Mapping[str, Any], *, stopped: bool = False) -> ContainerInfo:
    """``ContainerInfo`` from ``GET /containers/{id}/json``; ``stopped``: we asked it to stop
    (Docker records no such thing, see :func:`codeyard.domain.container.exit_reason`)."""
    state_attrs = attrs.get("State") or {}
    config = attrs.get("Config") or {}
    state = ContainerState(state_attrs.get("Status", "dead"))
    started_at = parse_time(state_attrs.get("StartedAt"))
    finished_at = parse_time(state_attrs.get("FinishedAt"))
    if started_at is not None and finished_at is not None and finished_at < started_at:
        # Docker stamps StartedAt after the start call returns, the exit from containerd's
        # event: a process that ends at once can show FinishedAt ~1 ms before StartedAt.
        finished_at = started_at
    exit_code = state_attrs.get("ExitCode") if state in _ENDED else None
    oom_killed = bool(state_attrs.get("OOMKilled", False))
    return ContainerInfo(
        id=attrs["Id"],
        name=str(attrs.get("Name", "")).lstrip("/"),
        image=config.get("Image") or attrs.get("Image", ""),
        state=state,
        labels=dict(config.get("Labels") or {}),
        exit_code=exit_code,
        oom_killed=oom_killed,
        reason=None
        if exit_code is None
        else exit_reason(exit_code, oom_killed=oom_killed, stopped=stopped),
        ip=_first_ip(attrs.get("NetworkSettings")),
        started_at=started_at,
        finished_at=finished_at,
    )


def info_from_summary(summary: Mapping[str, Any]) -> ContainerInfo:
    """``ContainerInfo`` from one ``GET /containers/json`` item (a sparse list entry).

    Complete only for ``created`` containers (no IP, exit code nor timestamps yet); other
    states need an inspect for exit code, OOM flag and timestamps.
    """
    names = summary.get("Names") or [""]
    return ContainerInfo(
        id=summary["Id"],
        name=str(names[0]).lstrip("/"),
        image=summary.get("Image", ""),
        state=ContainerState(summary.get("State", "dead")),
        labels=dict(summary.get("Labels") or {}),
        ip=_first_ip(summary.get("NetworkSettings")),
    )


# --- docker-py exceptions -> CodeyardError ------------------------------------------------


def translate_error(
    exc: Exception, *, container_id: str | None = None, image: str | None = None
) -> CodeyardError:
    """The domain error for a docker-py or requests exception.

    ``image`` is given on ``create``, where a 404 can only mean a missing image; elsewhere
    a 404 is a missing container.
    """
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code or 0
        detail = str(exc.explanation or exc)
        if status == 404 or isinstance(exc, docker.errors.NotFound):
            if image is not None:
                return ImageNotFound("no such image", image=image, detail=detail)
            return ContainerNotFound("no such container", container_id=container_id)
        if status == 409:
            if image is not None and "already in use" in detail:
                return AlreadyExists("container name already in use", detail=detail)
            return Conflict(
                "container state forbids the operation", container_id=container_id, detail=detail
            )
        if status == 400 and "unknown runtime" in detail.lower():
            return RuntimeNotAvailable("container runtime not offered", detail=detail)
        if 400 <= status < 500:
            return InvalidRequest(
                "Docker refused the request", errors=[{"loc": "docker", "msg": detail}]
            )
        return ServiceUnavailable(
            "Docker engine error", service="docker", status=status, detail=detail
        )
    # ConnectionError, timeouts, DockerException without HTTP status (bad socket path...).
    return ServiceUnavailable("Docker engine unreachable", service="docker", detail=str(exc))


#: What the adapter catches at its edge and hands to :func:`translate_error`.
DOCKER_ERRORS: tuple[type[Exception], ...] = (
    docker.errors.DockerException,
    requests.exceptions.RequestException,
)
