"""Settings: every knob of codeyard, read from ``CODEYARD_*`` environment variables.

Nested groups use ``__``: ``CODEYARD_BACKENDS__QUEUE=postgres``. The README's
configuration table is generated from the field descriptions by
:func:`settings_table_markdown`, so every field must have one.

Choosing a network backend without saying where it is (``backends.event_bus=redis`` and no
``redis_url``) is an :class:`InvalidSettings` error rather than a silent
``redis://localhost``: a default would point a production instance at whatever happens to
listen locally, and the mistake would only show up as data in the wrong place.
"""

from __future__ import annotations

import re
import socket
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self, Union, get_args, get_origin
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from codeyard.app.credentials import SecretsSettings
from codeyard.app.manager.settings import ManagerSettings
from codeyard.domain.base import validation_errors
from codeyard.domain.errors import InvalidInput
from codeyard.domain.secrets import SECRET_ENV_VAR

ENV_PREFIX = "CODEYARD_"
NESTED_DELIMITER = "__"
_MASK = "****"
#: The shape of domain identifiers (``codeyard.domain.base.Name``): it ends up in labels.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


class InvalidSettings(InvalidInput):
    """The configuration can never work as given; ``fields["errors"]`` says where."""

    code = "invalid_settings"


class BackendSettings(BaseModel):
    """Which adapter implements each port."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_bus: Literal["memory", "redis"] = Field(
        default="memory",
        description="Event bus: `memory` (one process, embedded) or `redis` (Redis streams).",
    )
    queue: Literal["memory", "postgres"] = Field(
        default="memory", description="Work queue: `memory` or `postgres` (durable)."
    )
    registry: Literal["memory", "postgres"] = Field(
        default="memory", description="Worker registry: `memory` or `postgres` (durable)."
    )
    runtime: Literal["memory", "docker"] = Field(
        default="memory",
        description="Container runtime: `memory` (no containers, tests) or `docker`.",
    )

    @property
    def needs_redis(self) -> bool:
        return self.event_bus == "redis"

    @property
    def needs_postgres(self) -> bool:
        return "postgres" in (self.queue, self.registry)

    @property
    def needs_docker(self) -> bool:
        return self.runtime == "docker"


def _default_owner() -> str:
    # Stable across restarts on purpose: a restarted instance must recognize (and clean up)
    # the containers it labelled before, so no pid or random suffix.
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()).strip("-._")[:128]
    return name or "codeyard"


class Settings(BaseSettings):
    """The effective configuration. Build it with ``Settings()`` (reads the environment)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    backends: BackendSettings = Field(
        default_factory=BackendSettings, description="Adapter selection per port."
    )
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis URL (`redis://`, `rediss://`, `unix://`). "
        "Required when `backends.event_bus=redis`.",
    )
    redis_max_connections: int = Field(
        default=2048,
        ge=1,
        description="Connections the Redis client may open; each blocking read (one per "
        "watched worker in the manager) holds one.",
    )
    postgres_dsn: SecretStr | None = Field(
        default=None,
        description="PostgreSQL DSN (`postgresql://user:pass@host:5432/db`). "
        "Required when the queue or the registry is `postgres`.",
    )
    docker_host: str | None = Field(
        default=None,
        description="Docker engine URL (`unix:///var/run/docker.sock`, `tcp://host:2376`). "
        "Unset: `DOCKER_HOST` or the default socket, like the docker CLI.",
    )
    docker_max_pool_size: int = Field(
        default=32,
        ge=1,
        description="HTTP connections the Docker client keeps; must exceed "
        "`docker_thread_limit` (docker-py fails with `queue.Full` otherwise).",
    )
    docker_thread_limit: int = Field(
        default=16, ge=1, description="Blocking Docker API calls in flight at once."
    )
    docker_bridge_tag: str = Field(
        default="",
        pattern=r"^[a-z0-9]{0,4}$",
        description="Goes into the names of the bridge interfaces codeyard's networks create: "
        "set a different one for each Docker engine that shares a host (tests, a second "
        "daemon).",
    )
    owner: str = Field(
        default_factory=_default_owner,
        pattern=NAME_PATTERN,
        description="This instance's id, put on every container it creates so it can find "
        "and reconcile them after a restart. Keep it stable and unique per host.",
        json_schema_extra={"doc_default": "host name"},
    )
    worker_heartbeat_timeout_s: float = Field(
        default=30.0, gt=0, description="A worker silent this long is considered dead."
    )
    worker_redis_outage_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a worker process waits for an unreachable Redis (retrying "
        "with back-off, its run going on, events buffered) before it exits with code 3.",
    )
    image_gc_max_age_days: float = Field(
        default=7.0, gt=0, description="Worker images unused this long are removed."
    )
    max_workers: int = Field(
        default=8, ge=1, description="Workers (containers) this instance runs at most."
    )
    shutdown_timeout_s: float = Field(
        default=10.0, gt=0, description="Deadline for closing connections on exit."
    )
    worker_base_distro: Literal["ubuntu-noble", "debian-bookworm"] = Field(
        default="ubuntu-noble",
        description="Distribution of the base every worker image is built on, bootstrapped "
        "offline as `codeyard-base:<distro>` (Debian is the fallback when Ubuntu fails).",
    )
    worker_wheel: Path | None = Field(
        default=None,
        description="The codeyard wheel worker images install. Unset: built from the source "
        "checkout codeyard runs from (required when codeyard is installed from a wheel).",
    )
    manager: ManagerSettings = Field(
        default_factory=ManagerSettings, description="The worker manager (`codeyard serve`)."
    )
    secrets: SecretsSettings = Field(
        default_factory=SecretsSettings,
        description="The credential store of worker secrets (`codeyard secrets`).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="Minimum level logged (case-insensitive)."
    )
    log_json: bool = Field(default=False, description="Log JSON lines instead of text.")

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            errors = [
                {**err, "env": env_var_name(*err["loc"].split("."))}
                for err in validation_errors(exc)
            ]
            raise InvalidSettings("invalid settings", errors=errors) from exc

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        _check_scheme(value, ("redis", "rediss", "unix"), "redis_url")
        return value

    @field_validator("postgres_dsn")
    @classmethod
    def _check_postgres_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        _check_scheme(value, ("postgresql", "postgres"), "postgres_dsn")
        return value

    @model_validator(mode="after")
    def _check_requirements(self) -> Self:
        for name, needed, why in (
            ("redis_url", self.backends.needs_redis, "backends.event_bus=redis"),
            ("postgres_dsn", self.backends.needs_postgres, "a postgres queue or registry"),
        ):
            if needed and getattr(self, name) is None:
                raise InvalidSettings(
                    f"{env_var_name(name)} is required by {why}",
                    setting=name,
                    env=env_var_name(name),
                )
        if self.docker_max_pool_size <= self.docker_thread_limit:
            raise InvalidSettings(
                "docker_max_pool_size must exceed docker_thread_limit",
                docker_max_pool_size=self.docker_max_pool_size,
                docker_thread_limit=self.docker_thread_limit,
            )
        return self

    def secret(self, name: Literal["redis_url", "postgres_dsn"]) -> str:
        """The clear-text value of a secret setting; raises ``InvalidSettings`` when unset."""
        value: SecretStr | None = getattr(self, name)
        if value is None:
            raise InvalidSettings(f"{env_var_name(name)} is not set", setting=name)
        return value.get_secret_value()

    def masked(self) -> dict[str, Any]:
        """The settings as JSON-ready data, passwords in URLs replaced by ``****``."""
        data = self.model_dump(mode="json")
        for name in ("redis_url", "postgres_dsn"):
            value: SecretStr | None = getattr(self, name)
            data[name] = None if value is None else mask_url(value.get_secret_value())
        if self.docker_host is not None:
            data["docker_host"] = mask_url(self.docker_host)
        return data


def unknown_env_vars(environ: Mapping[str, str]) -> list[str]:
    """``CODEYARD_*`` variables that set nothing (typos such as ``CODEYARD_QUEUE``)."""
    known = {env_var_name(*path) for path, _ in _leaves(Settings, ())}
    known |= {env_var_name(name) for name in Settings.model_fields}  # JSON-valued groups
    known.add(SECRET_ENV_VAR)  # set by the manager in worker containers, not a setting
    return sorted(
        key
        for key in environ
        if key.upper().startswith(ENV_PREFIX)
        and key.upper() not in known
        and not key.upper().startswith(ENV_PREFIX + "TEST_")  # the test suite's own knobs
    )


def _leaves(
    model: type[BaseModel], path: tuple[str, ...]
) -> list[tuple[tuple[str, ...], FieldInfo]]:
    """Every non-group field, depth first, with its path (``("backends", "queue")``)."""
    out: list[tuple[tuple[str, ...], FieldInfo]] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.extend(_leaves(annotation, (*path, name)))
        else:
            out.append(((*path, name), info))
    return out


def _check_scheme(value: SecretStr | None, schemes: tuple[str, ...], name: str) -> None:
    if value is None:
        return
    scheme = urlsplit(value.get_secret_value()).scheme
    if scheme not in schemes:
        # The value itself is not echoed: it may hold a password.
        raise InvalidSettings(
            f"{env_var_name(name)} must use one of: {', '.join(schemes)}", scheme=scheme
        )


def mask_url(url: str) -> str:
    """``redis://u:secret@h/0`` -> ``redis://u:****@h/0``; also masks ``password=`` params."""
    parts = urlsplit(url)
    if parts.password is None and "password" not in parts.query.lower():
        return url  # nothing to hide; urlunsplit would also rewrite "unix:///x" as "unix:/x"
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostinfo = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:{_MASK}@{hostinfo}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [(k, _MASK if "password" in k.lower() else v) for k, v in pairs]
        query = urlencode(masked, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def env_var_name(*path: str) -> str:
    """``("backends", "queue")`` -> ``CODEYARD_BACKENDS__QUEUE``."""
    return ENV_PREFIX + NESTED_DELIMITER.join(p.upper() for p in path)


# --- documentation --------------------------------------------------------------------------


def _render_type(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{v}`" for v in get_args(annotation))
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return " \\| ".join(_render_type(a) for a in inner) + " (optional)"
    if annotation is SecretStr:
        return "secret string"
    if origin is not None:  # Annotated[str, ...] (Name) and the like
        return _render_type(get_args(annotation)[0])
    return getattr(annotation, "__name__", str(annotation))


def _render_default(info: FieldInfo) -> str:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    if "doc_default" in extra:
        return f"({extra['doc_default']})"
    if info.default is None:
        return "unset"
    return f"`{str(info.default).lower() if isinstance(info.default, bool) else info.default}`"


def _row(path: tuple[str, ...], info: FieldInfo) -> str:
    description = (info.description or "").replace("|", "\\|")
    cells = (
        f"`{env_var_name(*path)}`",
        _render_type(info.annotation),
        _render_default(info),
        description,
    )
    return f"| {' | '.join(cells)} |"


def settings_table_markdown() -> str:
    """The configuration reference as a Markdown table (for the README)."""
    lines = [
        "| Variable | Type | Default | Description |",
        "|---|---|---|---|",
        *(_row(path, info) for path, info in _leaves(Settings, ())),
    ]
    return "\n".join(lines) + "\n"
