"""``codeyard secrets``: values in through stdin only, never printed; typed exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from codeyard.app.cli import app

CANARY = "canary-cli-5e6f7a8b9c0d"


@pytest.fixture
def store_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    key = CliRunner().invoke(app, ["secrets", "keygen"]).output.strip()
    path = tmp_path / "secrets.fernet"
    monkeypatch.setenv("CODEYARD_SECRETS__KEY", key)
    monkeypatch.setenv("CODEYARD_SECRETS__PATH", str(path))
    return path


def test_set_ls_rm_never_print_a_value(store_env: Path) -> None:
    runner = CliRunner()
    stored = runner.invoke(app, ["secrets", "set", "gh-token"], input=CANARY + "\n")
    listed = runner.invoke(app, ["secrets", "ls"])
    rotated = runner.invoke(app, ["secrets", "rotate"])
    removed = runner.invoke(app, ["secrets", "rm", "gh-token"])
    after = runner.invoke(app, ["secrets", "ls"])
    for result in (stored, listed, rotated, removed, after):
        assert result.exit_code == 0, result.output
        assert CANARY not in result.output
    assert listed.output.split() == ["gh-token"]
    assert after.output.split() == []
    assert CANARY.encode() not in store_env.read_bytes()


def test_no_key_wrong_key_and_bad_name(store_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["secrets", "set", "a"], input=CANARY).exit_code == 0
    assert runner.invoke(app, ["secrets", "set", "bad name"], input=CANARY).exit_code == 2
    other = runner.invoke(app, ["secrets", "keygen"]).output.strip()
    monkeypatch.setenv("CODEYARD_SECRETS__KEY", other)
    wrong = runner.invoke(app, ["secrets", "ls"])
    assert wrong.exit_code == 1
    assert "wrong key" in wrong.output
    monkeypatch.delenv("CODEYARD_SECRETS__KEY")
    assert runner.invoke(app, ["secrets", "ls"]).exit_code == 2
