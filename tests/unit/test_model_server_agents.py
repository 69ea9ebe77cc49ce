"""Finding the pinned agent CLIs, and scripts/install-agents agreeing with the pins."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from codeyard.domain.errors import NotFound, error_from_dict
from codeyard.testing.agents import PINNED, AgentBinaryMissing, agent_binary, agents_dir
from tests.services import service_unavailable

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-agents"


def _script_pins() -> dict[str, tuple[str, str, str]]:
    text = SCRIPT.read_text()
    rows = re.findall(r'^\s+"(\w+) (\S+) (\S+) (\S+)"$', text, flags=re.MULTILINE)
    return {provider: (package, version, binary) for provider, package, version, binary in rows}


def _fake_layout(root: Path, provider: str, version: str | None = None) -> Path:
    """The on-disk shape npm leaves: the package manifest and the .bin entry."""
    pin = PINNED[provider]
    package_dir = root / provider / "node_modules" / pin.package
    package_dir.mkdir(parents=True)
    manifest = {"name": pin.package, "version": version or pin.version}
    (package_dir / "package.json").write_text(json.dumps(manifest))
    binary = root / provider / "node_modules" / ".bin" / pin.binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text("#!/bin/sh\necho stand-in\n")
    binary.chmod(0o755)
    return binary


def test_script_and_module_pin_the_same_versions() -> None:
    assert _script_pins() == {p: tuple(pin) for p, pin in PINNED.items()}
    assert set(PINNED) == {"claude", "droid", "opencode", "codex", "gemini"}


def test_agents_dir_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CODEYARD_AGENTS_DIR", str(tmp_path))
    assert agents_dir() == tmp_path
    monkeypatch.delenv("CODEYARD_AGENTS_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert agents_dir() == tmp_path / "home" / ".cache" / "codeyard" / "agents"


def test_missing_binary_is_a_typed_error_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CODEYARD_AGENTS_DIR", str(tmp_path))
    with pytest.raises(AgentBinaryMissing) as caught:
        agent_binary("gemini")
    error = caught.value
    assert isinstance(error, NotFound)
    assert "scripts/install-agents gemini" in str(error)
    assert "@google/gemini-cli@0.61.0" in str(error)
    rebuilt = error_from_dict(error.to_dict())
    assert type(rebuilt) is AgentBinaryMissing
    with pytest.raises(AgentBinaryMissing, match="no pinned agent CLI"):
        agent_binary("cursor")


def test_installed_binary_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CODEYARD_AGENTS_DIR", str(tmp_path))
    binary = _fake_layout(tmp_path, "codex")
    assert agent_binary("codex") == binary
    binary.chmod(0o644)
    with pytest.raises(AgentBinaryMissing):
        agent_binary("codex")


def _run_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("node") is None or shutil.which("npm") is None:
        service_unavailable("Node.js", "node/npm are not on PATH", "install nodejs and npm")
    env = {**os.environ, "CODEYARD_AGENTS_DIR": str(tmp_path)}
    return subprocess.run(
        [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_script_is_a_fast_no_op_when_everything_is_present(tmp_path: Path) -> None:
    for provider in PINNED:
        _fake_layout(tmp_path, provider)
    started = time.monotonic()
    done = _run_script(tmp_path)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 5
    assert "installing" not in done.stderr
    assert not list(tmp_path.glob("*.install.log")), "npm was not run"


def test_script_refuses_unknown_providers(tmp_path: Path) -> None:
    done = _run_script(tmp_path, "cursor")
    assert done.returncode == 1
    assert "unknown provider(s): cursor" in done.stderr
