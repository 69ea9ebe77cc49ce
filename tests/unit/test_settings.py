"""Settings: CODEYARD_* environment, nested groups, typed validation errors, masking."""

from __future__ import annotations

import os
import socket

import pytest

from codeyard.app.credentials import SecretsSettings
from codeyard.app.manager.settings import ManagerSettings, manager_config
from codeyard.app.settings import (
    BackendSettings,
    InvalidSettings,
    Settings,
    mask_url,
    settings_table_markdown,
    unknown_env_vars,
)
from codeyard.domain.errors import InvalidInput


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CODEYARD_"):
            monkeypatch.delenv(key)


def test_defaults_are_the_embedded_memory_setup() -> None:
    settings = Settings()
    assert settings.backends == BackendSettings()
    assert (settings.backends.event_bus, settings.backends.queue) == ("memory", "memory")
    assert (settings.backends.registry, settings.backends.runtime) == ("memory", "memory")
    assert settings.redis_url is None
    assert settings.postgres_dsn is None
    assert settings.owner


def test_owner_defaults_to_a_sanitized_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "build box #7")
    assert Settings().owner == "build-box--7"


def test_env_prefix_and_nested_delimiter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEYARD_MAX_WORKERS", "3")
    monkeypatch.setenv("MAX_WORKERS", "99")  # no prefix: ignored
    monkeypatch.setenv("CODEYARD_BACKENDS__QUEUE", "postgres")
    monkeypatch.setenv("CODEYARD_BACKENDS__RUNTIME", "docker")
    monkeypatch.setenv("CODEYARD_POSTGRES_DSN", "postgresql://u:pw@db:5432/codeyard")
    monkeypatch.setenv("CODEYARD_LOG_LEVEL", "debug")
    monkeypatch.setenv("CODEYARD_LOG_JSON", "true")
    settings = Settings()
    assert settings.max_workers == 3
    assert settings.backends.queue == "postgres"
    assert settings.backends.runtime == "docker"
    assert settings.backends.event_bus == "memory"
    assert settings.secret("postgres_dsn") == "postgresql://u:pw@db:5432/codeyard"
    assert settings.log_level == "DEBUG"
    assert settings.log_json is True


def test_a_group_can_be_given_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEYARD_BACKENDS", '{"event_bus": "redis"}')
    monkeypatch.setenv("CODEYARD_REDIS_URL", "redis://127.0.0.1:6379/0")
    assert Settings().backends.event_bus == "redis"


@pytest.mark.parametrize(
    ("backends", "env"),
    [
        ({"event_bus": "redis"}, "CODEYARD_REDIS_URL"),
        ({"queue": "postgres"}, "CODEYARD_POSTGRES_DSN"),
        ({"registry": "postgres"}, "CODEYARD_POSTGRES_DSN"),
    ],
)
def test_selecting_a_server_backend_requires_its_url(backends: dict[str, str], env: str) -> None:
    with pytest.raises(InvalidSettings) as caught:
        Settings(backends=backends)
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.code == "invalid_settings"
    assert caught.value.fields["env"] == env
    assert env in str(caught.value)


def test_structural_errors_are_typed_and_name_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CODEYARD_BACKENDS__QUEUE", "mysql")
    monkeypatch.setenv("CODEYARD_MAX_WORKERS", "0")
    with pytest.raises(InvalidSettings) as caught:
        Settings()
    envs = {e["env"] for e in caught.value.fields["errors"]}
    assert envs == {"CODEYARD_BACKENDS__QUEUE", "CODEYARD_MAX_WORKERS"}


def test_a_bad_url_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEYARD_REDIS_URL", "http://admin:hunter2@cache:6379")
    with pytest.raises(InvalidSettings) as caught:
        Settings()
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(caught.value.fields)


def test_docker_pool_must_exceed_the_thread_limit() -> None:
    with pytest.raises(InvalidSettings, match="docker_max_pool_size"):
        Settings(docker_max_pool_size=8, docker_thread_limit=8)
    assert Settings(docker_max_pool_size=9, docker_thread_limit=8).docker_thread_limit == 8


def test_owner_must_be_a_safe_name() -> None:
    with pytest.raises(InvalidSettings):
        Settings(owner="not a/label")


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(Exception, match="frozen"):
        settings.max_workers = 3  # type: ignore[misc]


# --- secrets ------------------------------------------------------------------------------


def test_secrets_are_masked_in_repr_and_in_the_dump() -> None:
    settings = Settings(
        backends={"event_bus": "redis", "queue": "postgres"},
        redis_url="redis://:s3cret@cache:6379/0",
        postgres_dsn="postgresql://app:pa55@db:5432/codeyard?sslmode=require",
    )
    assert "s3cret" not in repr(settings)
    assert "pa55" not in repr(settings)
    masked = settings.masked()
    assert masked["redis_url"] == "redis://:****@cache:6379/0"
    assert masked["postgres_dsn"] == "postgresql://app:****@db:5432/codeyard?sslmode=require"
    assert masked["backends"] == {
        "event_bus": "redis",
        "queue": "postgres",
        "registry": "memory",
        "runtime": "memory",
    }
    assert settings.secret("redis_url") == "redis://:s3cret@cache:6379/0"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user:pw@h:1/0", "redis://user:****@h:1/0"),
        ("postgresql://postgres@127.0.0.1:5/db", "postgresql://postgres@127.0.0.1:5/db"),
        (
            "postgresql://u@h/db?password=x&sslmode=require",
            "postgresql://u@h/db?password=****&sslmode=require",
        ),
        ("postgresql://u:p%40ss:word@h/db", "postgresql://u:****@h/db"),
        ("unix:///var/run/docker.sock", "unix:///var/run/docker.sock"),
    ],
)
def test_mask_url(url: str, expected: str) -> None:
    assert mask_url(url) == expected


def test_secret_of_an_unset_value_is_a_typed_error() -> None:
    with pytest.raises(InvalidSettings, match="CODEYARD_REDIS_URL"):
        Settings().secret("redis_url")


# --- documentation ------------------------------------------------------------------------


def test_markdown_table_documents_every_setting() -> None:
    table = settings_table_markdown()
    lines = table.strip().splitlines()
    assert lines[0] == "| Variable | Type | Default | Description |"
    rows = lines[2:]
    groups = (BackendSettings, ManagerSettings, SecretsSettings)
    leaf_count = len(Settings.model_fields) - len(groups) + sum(len(g.model_fields) for g in groups)
    assert len(rows) == leaf_count
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert len(cells) == 4, row
        assert cells[0].startswith("`CODEYARD_")
        assert cells[3], f"no description: {row}"
    assert "`CODEYARD_BACKENDS__EVENT_BUS` | `memory` \\| `redis` | `memory` |" in table
    assert "`CODEYARD_OWNER` | str | (host name) |" in table


def test_unknown_variables_are_reported() -> None:
    env = {
        "CODEYARD_QUEUE": "postgres",  # the typo this catches: it is BACKENDS__QUEUE
        "CODEYARD_BACKENDS__QUEUE": "postgres",
        "CODEYARD_BACKENDS": "{}",
        "CODEYARD_REDIS_URL": "redis://h",
        "CODEYARD_TEST_IMAGE": "x",
        "PATH": "/bin",
    }
    assert unknown_env_vars(env) == ["CODEYARD_QUEUE"]


def test_the_workers_redis_outage_budget_reaches_their_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Set on the manager; worker_main reads it from the worker container's own env.
    monkeypatch.setenv("CODEYARD_WORKER_REDIS_OUTAGE_S", "7.5")
    settings = Settings(backends={"event_bus": "redis"}, redis_url="redis://localhost:6400/0")
    worker_env = manager_config(settings).worker_env
    assert worker_env["CODEYARD_WORKER_REDIS_OUTAGE_S"] == "7.5"
    for key, value in worker_env.items():
        monkeypatch.setenv(key, value)
    assert Settings().worker_redis_outage_s == 7.5
