"""Containers and images as the control plane sees them, independent of any engine."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum

from pydantic import AwareDatetime, Field, NonNegativeInt

from codeyard.domain.base import DomainModel, Name
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


class Mount(DomainModel):
    target: str
    source: str | None = None
    """Host path or volume name; ``None`` means a tmpfs."""
    read_only: bool = False
    tmpfs_size_mb: int | None = None


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
    mounts: tuple[Mount, ...] = ()
    read_only_root: bool = False
    cap_drop_all: bool = True
    no_new_privileges: bool = True
    runtime: str | None = None


class ContainerInfo(DomainModel):
    id: str
    name: str
    image: str
    state: ContainerState
    labels: dict[str, str] = Field(default_factory=dict)
    exit_code: int | None = None
    oom_killed: bool = False
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
