"""Containers and images as the control plane sees them, independent of any engine."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Annotated, Self

from pydantic import AwareDatetime, Field, NonNegativeInt, field_validator, model_validator

from codeyard.domain.base import DomainModel, Name
from codeyard.domain.errors import InvalidRequest
from codeyard.domain.worker import Module, NetworkPolicy, Resources

#: Label keys every object codeyard creates carries, so a control plane can reconcile.
LABEL_PREFIX = "dev.codeyard."
LABEL_OWNER = LABEL_PREFIX + "owner"
LABEL_WORKER = LABEL_PREFIX + "worker-id"
LABEL_TASK = LABEL_PREFIX + "task-id"
LABEL_IMAGE_HASH = LABEL_PREFIX + "image-hash"
LABEL_CREATED = LABEL_PREFIX + "created-at"


class ContainerState(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"
    EXITED = "exited"
    DEAD = "dead"
    REMOVING = "removing"


class ExitReason(StrEnum):
    """Why a container's main process ended."""

    EXITED = "exited"
    """It ended by itself (any exit code), or something else than us stopped it."""
    OOM = "oom"
    """The kernel's OOM killer ended it (exit 137 with the engine's OOM flag)."""
    STOPPED = "stopped"
    """Our ``stop`` ended it: SIGTERM (143) or the SIGKILL after the timeout (137)."""


def exit_reason(exit_code: int, *, oom_killed: bool, stopped: bool) -> ExitReason:
    """The reason for an ended container; ``stopped``: a stop was asked for it."""
    if exit_code == 137 and oom_killed:
        return ExitReason.OOM
    if exit_code in (137, 143) and stopped:
        return ExitReason.STOPPED
    return ExitReason.EXITED


class Mount(DomainModel):
    target: str
    source: str | None = None
    """Host path or volume name; ``None`` means a tmpfs (or an anonymous volume)."""
    read_only: bool = False
    tmpfs_size_mb: int | None = None
    volume: bool = False
    """Without ``source``: an anonymous volume (the engine's disk, removed with the
    container) instead of a tmpfs (RAM)."""


class ContainerSpec(DomainModel):
    """Everything needed to create one container. Secure values are the defaults."""

    image: str
    name: Name | None = None
    command: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    user: str | None = "1000:1000"
    resources: Resources = Field(default_factory=Resources)
    network: NetworkPolicy = NetworkPolicy.EGRESS
    allowed_host_ports: tuple[Annotated[int, Field(ge=1, le=65535)], ...] = ()
    """Host TCP ports the container may reach (``network=ALLOWLIST`` only); every other
    host service is firewalled off for EGRESS and ALLOWLIST."""
    mounts: tuple[Mount, ...] = ()
    extra_hosts: dict[str, str] = Field(default_factory=dict)
    """Extra ``/etc/hosts`` entries; the value ``host-gateway`` is the host's address as
    seen from the container (how workers reach host services such as Redis)."""
    read_only_root: bool = False
    cap_drop_all: bool = True
    no_new_privileges: bool = True
    runtime: str | None = None
    """OCI runtime by name (runc, sysbox-runc, runsc); ``None``: the engine's default, or
    sysbox-runc for ``docker_in_docker`` when the engine offers it."""
    init: bool = True
    """Run a minimal init as PID 1 (Docker: tini). It forwards SIGTERM (a bare ``sleep`` as
    PID 1 ignores it, so every stop waited the whole timeout) and reaps orphans."""
    docker_in_docker: bool = False
    """The container runs its own Docker daemon (the DOCKER module)."""
    allow_insecure_dind: bool = False
    """Without sysbox, Docker-in-Docker needs near-root on the host (all capabilities,
    unconfined seccomp/AppArmor): only with this explicit opt-in."""

    @field_validator("allowed_host_ports", mode="after")
    @classmethod
    def _canonical_ports(cls, ports: tuple[int, ...]) -> tuple[int, ...]:
        # A set in meaning; one order keeps the network chosen for it stable.
        return tuple(sorted(set(ports)))

    @model_validator(mode="after")
    def _check_ports(self) -> Self:
        if self.allowed_host_ports and self.network is not NetworkPolicy.ALLOWLIST:
            raise InvalidRequest(
                "allowed_host_ports requires network=allowlist", network=self.network.value
            )
        return self


class ContainerInfo(DomainModel):
    id: str
    name: str
    image: str
    state: ContainerState
    labels: dict[str, str] = Field(default_factory=dict)
    exit_code: int | None = None
    oom_killed: bool = False
    reason: ExitReason | None = None
    """Set once the container has ended (see :func:`exit_reason`)."""
    ip: str | None = None
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None


class ExecResult(DomainModel):
    exit_code: int
    stdout: str = ""
    stderr: str = ""


class ImageRecipe(DomainModel):
    """The inputs that fully determine a worker image; their hash is the image's identity."""

    base_image: str
    base_image_id: str = ""
    modules: tuple[Module, ...] = ()
    agent: str | None = None
    agent_version: str | None = None
    wrapper_hash: str = ""
    ca_certs_hash: str = ""

    def content_hash(self) -> str:
        canonical = self.model_dump(mode="json")
        canonical["modules"] = sorted(canonical["modules"])
        blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def tag(self) -> str:
        return f"codeyard-worker:{self.content_hash()[:16]}"


class ImageRef(DomainModel):
    tag: str
    image_id: str
    content_hash: str
    size_bytes: NonNegativeInt = 0
    created_at: AwareDatetime
    last_used_at: AwareDatetime
