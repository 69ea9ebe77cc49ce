"""Workers: what a worker is asked to be (WorkerSpec) and what the registry knows of it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Self

from pydantic import (
    AwareDatetime,
    Field,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from codeyard.domain.agent import AgentProvider, ProviderName
from codeyard.domain.base import DomainModel, Name
from codeyard.domain.errors import InvalidRequest, InvalidTransition


class Module(StrEnum):
    """Tooling layered into a worker image."""

    GIT = "git"
    GITHUB_CLI = "github_cli"
    COPIER = "copier"
    CURL = "curl"
    DOCKER = "docker"
    NODE = "node"
    PYTHON = "python"


class NetworkPolicy(StrEnum):
    NONE = "none"
    """No network at all."""
    EGRESS = "egress"
    """Outbound internet; host services are NOT reachable (firewalled)."""
    ALLOWLIST = "allowlist"
    """Outbound plus only the host services named in ``WorkerSpec.allowed_hosts``."""


class Resources(DomainModel):
    cpus: PositiveFloat = 2.0
    memory_mb: PositiveInt = 4096
    pids: PositiveInt = 1024
    #: Size of the writable workspace tmpfs/volume, when the runtime supports a limit.
    disk_mb: PositiveInt | None = None


class SecretRef(DomainModel):
    """A secret injected as ``env`` at container start, resolved from a credential store."""

    name: Name
    env: str


class WorkerSpec(DomainModel):
    agent: ProviderName = AgentProvider.CLAUDE
    agent_version: str | None = None
    instructions: str | None = None
    allowed_commands: tuple[str, ...] = ()
    modules: tuple[Module, ...] = (Module.GIT,)
    resources: Resources = Field(default_factory=Resources)
    network: NetworkPolicy = NetworkPolicy.EGRESS
    allowed_hosts: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    secrets: tuple[SecretRef, ...] = ()
    runtime: str | None = None
    #: Docker-in-Docker (the DOCKER module) without sysbox: near-root on the host. Opt-in.
    allow_insecure_dind: bool = False
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("modules", mode="after")
    @classmethod
    def _canonical_modules(cls, modules: tuple[Module, ...]) -> tuple[Module, ...]:
        # Modules are a set in meaning; a canonical order keeps image hashes stable.
        return tuple(sorted(set(modules), key=lambda m: m.value))

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.allowed_hosts and self.network is not NetworkPolicy.ALLOWLIST:
            raise InvalidRequest(
                "allowed_hosts requires network=allowlist", network=self.network.value
            )
        return self


class WorkerStatus(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    IDLE = "idle"
    BUSY = "busy"
    UNHEALTHY = "unhealthy"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (WorkerStatus.STOPPED, WorkerStatus.FAILED)

    @property
    def is_active(self) -> bool:
        return not self.is_terminal


_LIVE = {
    WorkerStatus.RUNNING,
    WorkerStatus.IDLE,
    WorkerStatus.BUSY,
    WorkerStatus.UNHEALTHY,
    WorkerStatus.STOPPED,
    WorkerStatus.FAILED,
}
_TRANSITIONS: dict[WorkerStatus, frozenset[WorkerStatus]] = {
    # Repeating the current state is idempotent (a retried command must not fail).
    WorkerStatus.STARTING: frozenset({WorkerStatus.STARTING, *_LIVE}),
    WorkerStatus.RUNNING: frozenset(_LIVE),
    WorkerStatus.IDLE: frozenset(_LIVE),
    WorkerStatus.BUSY: frozenset(_LIVE),
    WorkerStatus.UNHEALTHY: frozenset(_LIVE),
    # Terminal states are final: a stopped worker is never brought back under the same id.
    WorkerStatus.STOPPED: frozenset({WorkerStatus.STOPPED}),
    WorkerStatus.FAILED: frozenset({WorkerStatus.FAILED}),
}


def check_transition(worker_id: str, current: WorkerStatus, new: WorkerStatus) -> None:
    """Raise :class:`InvalidTransition` unless ``current -> new`` is allowed."""
    if new not in _TRANSITIONS[current]:
        raise InvalidTransition(
            f"worker cannot go from {current.value} to {new.value}",
            worker_id=worker_id,
            current=current.value,
            requested=new.value,
        )


#: Statuses in which a worker is up: the first move into one stamps ``started_at``.
UP_STATUSES = frozenset({WorkerStatus.RUNNING, WorkerStatus.IDLE, WorkerStatus.BUSY})


class WorkerRecord(DomainModel):
    """A worker as the registry knows it."""

    worker_id: Name
    spec: WorkerSpec
    status: WorkerStatus = WorkerStatus.STARTING
    host: str = ""
    container_id: str | None = None
    image: str | None = None
    ip: str | None = None
    task_id: Name | None = None
    created_at: AwareDatetime
    heartbeat_at: AwareDatetime
    error: str | None = None
    #: When the worker was first up (RUNNING, IDLE or BUSY); stamped by the registry.
    started_at: AwareDatetime | None = None
    #: When the worker reached a terminal status; stamped by the registry.
    ended_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _check_timings(self) -> Self:
        # Terminal states are final, so an end time on a live worker can only be corrupt data.
        if self.ended_at is not None and not self.status.is_terminal:
            raise InvalidRequest(
                "ended_at requires a terminal status",
                worker_id=self.worker_id,
                status=self.status.value,
            )
        return self

    def with_status(self, status: WorkerStatus, *, error: str | None = None) -> WorkerRecord:
        check_transition(self.worker_id, self.status, status)
        return self.model_copy(update={"status": status, "error": error or self.error})

    def stamped(self, now: datetime) -> WorkerRecord:
        """This record with the timings its status calls for, stamped ``now`` if unset.

        ``started_at`` is set the first time the status is RUNNING, IDLE or BUSY (a worker
        that was never up, e.g. STARTING -> UNHEALTHY -> FAILED, has none); ``ended_at`` the
        first time it is terminal. A timing already set is never overwritten, so later
        moves (UNHEALTHY -> RUNNING, a repeated STOPPED) keep the first one.
        """
        update: dict[str, datetime] = {}
        if self.started_at is None and self.status in UP_STATUSES:
            update["started_at"] = now
        if self.ended_at is None and self.status.is_terminal:
            update["ended_at"] = now
        if not update:
            return self
        # Through validation: ``now`` must be aware like every stored timestamp.
        return WorkerRecord.parse({**self.model_dump(), **update})

    def is_stale(self, now: datetime, max_age_s: float) -> bool:
        return self.status.is_active and (now - self.heartbeat_at).total_seconds() > max_age_s
