"""The ``codeyard`` command line, through typer's CliRunner."""

from __future__ import annotations

import importlib.metadata
import json
import os

import pytest
from typer.testing import CliRunner

from codeyard.app.cli import app
from tests.services import free_port

runner = CliRunner()
WIDE = {"COLUMNS": "240"}  # no wrapping inside table cells: assertions see whole phrases


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("CODEYARD_"):
            monkeypatch.delenv(key)


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"codeyard {importlib.metadata.version('codeyard')}"


def test_config_json_is_the_effective_settings_with_passwords_masked() -> None:
    env = {
        "CODEYARD_BACKENDS__EVENT_BUS": "redis",
        "CODEYARD_REDIS_URL": "redis://:hunter2@cache:6379/0",
        "CODEYARD_MAX_WORKERS": "5",
    }
    result = runner.invoke(app, ["config", "--json"], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["backends"]["event_bus"] == "redis"
    assert data["max_workers"] == 5
    assert data["redis_url"] == "redis://:****@cache:6379/0"
    assert "hunter2" not in result.output


def test_config_table_names_the_variables_and_warns_about_unknown_ones() -> None:
    env = {**WIDE, "CODEYARD_QUEUE": "postgres"}
    result = runner.invoke(app, ["config"], env=env)
    assert result.exit_code == 0, result.output
    assert "CODEYARD_BACKENDS__QUEUE" in result.stdout
    assert "CODEYARD_QUEUE is not a codeyard setting" in result.stderr


def test_invalid_configuration_exits_2_naming_the_variable() -> None:
    result = runner.invoke(app, ["config"], env={"CODEYARD_BACKENDS__QUEUE": "mysql"})
    assert result.exit_code == 2
    assert "CODEYARD_BACKENDS__QUEUE" in result.stderr


def test_serve_needs_a_redis_event_bus() -> None:
    result = runner.invoke(app, ["serve"], env=WIDE)
    assert result.exit_code == 2
    assert "CODEYARD_BACKENDS__EVENT_BUS=redis" in result.stderr


@pytest.mark.timeout(60)
def test_serve_exits_1_when_redis_is_unreachable_without_leaking_the_password() -> None:
    env = {
        **WIDE,
        "CODEYARD_BACKENDS__EVENT_BUS": "redis",
        "CODEYARD_REDIS_URL": f"redis://:secret@127.0.0.1:{free_port()}/0",
    }
    result = runner.invoke(app, ["serve"], env=env)
    assert result.exit_code == 1, result.output
    assert "Redis unreachable" in result.stderr
    assert "secret" not in result.output


@pytest.mark.timeout(60)
def test_doctor_fails_when_the_selected_redis_is_unreachable() -> None:
    env = {
        **WIDE,
        "CODEYARD_BACKENDS__EVENT_BUS": "redis",
        "CODEYARD_REDIS_URL": f"redis://:secret@127.0.0.1:{free_port()}/0",
    }
    result = runner.invoke(app, ["doctor"], env=env)
    assert result.exit_code == 1, result.output
    redis_line = next(line for line in result.stdout.splitlines() if "Redis" in line)
    assert "MISSING" in redis_line
    assert "required" in redis_line
    assert "fix: start Redis there" in result.stdout
    assert "CODEYARD_REDIS_URL" in result.stdout
    assert "secret" not in result.output
    assert "required checks failed: Redis" in result.stderr
    for binary in ("claude", "droid", "opencode", "codex", "gemini"):
        assert f"agent CLI {binary}" in result.stdout


@pytest.mark.timeout(60)
def test_doctor_passes_with_memory_backends_whatever_is_installed() -> None:
    result = runner.invoke(app, ["doctor"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "all required checks passed" in result.stdout
    assert "extra CA certificates" in result.stdout
