"""The allowed_commands PATH shim with real executables and a real bash (no agent CLI).

The shim under the real Claude CLI is covered by tests/integration/test_worker_standby_cli.py.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from codeyard.app.command_shim import AGENT_COMMANDS, SHIM_DIR, build_shim, command_name
from tests.services import service_unavailable

SEARCH = os.environ.get("PATH", os.defpath)


def run_in_shim(shim_path: str, command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash", path=SEARCH)
    assert bash is not None
    return subprocess.run(
        [bash, "-c", command],
        env={"PATH": shim_path, "HOME": str(cwd)},
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("command", "name"),
    [
        ("ls", "ls"),
        ("git status", "git"),
        ("  pytest -x ", "pytest"),
        ("/usr/bin/ls -l", "/usr/bin/ls"),
        ("echo 'unbalanced", "echo"),
        ("", ""),
    ],
)
def test_command_name_is_the_first_word(command: str, name: str) -> None:
    assert command_name(command) == name


def test_only_allowed_and_agent_commands_are_found(tmp_path: Path) -> None:
    shim = build_shim(
        tmp_path / "home",
        ("ls", "git status", "no-such-command-xyz"),
        agent_executable=None,
        search_path=SEARCH,
    )
    assert shim.directory == tmp_path / "home" / SHIM_DIR
    assert shim.path == str(shim.directory)
    assert "no-such-command-xyz" in shim.missing
    assert set(shim.missing) <= {"no-such-command-xyz", "git"}  # git may not be installed
    assert {"ls", *AGENT_COMMANDS} <= set(shim.linked)
    assert not shim.directory.stat().st_mode & stat.S_IWUSR  # the agent cannot add links
    (tmp_path / "work").mkdir()
    allowed = run_in_shim(shim.path, "ls -a", tmp_path / "work")
    denied = run_in_shim(shim.path, "touch made-by-agent", tmp_path / "work")
    assert allowed.returncode == 0, allowed.stderr
    assert "." in allowed.stdout.split()
    assert denied.returncode == 127
    assert "command not found" in denied.stderr
    assert not (tmp_path / "work" / "made-by-agent").exists()


def test_a_node_script_agent_gets_node_and_a_rebuild_replaces_the_shim(tmp_path: Path) -> None:
    if shutil.which("node", path=SEARCH) is None:
        service_unavailable("node", "not on PATH", "scripts/dev setup (installs Node.js)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    cli = bin_dir / "fake-cli"
    cli.write_text("#!/usr/bin/env node\nconsole.log('hi')\n")
    cli.chmod(0o755)
    search = f"{bin_dir}:{SEARCH}"
    first = build_shim(tmp_path, ("ls",), agent_executable="fake-cli", search_path=search)
    assert first.linked["fake-cli"] == str(cli)
    assert "node" in first.linked
    second = build_shim(tmp_path, ("cat",), agent_executable=str(cli), search_path=search)
    assert second.directory == first.directory
    assert "ls" not in second.linked
    assert {"cat", "fake-cli", "node"} <= set(second.linked)
    # The agent's own CLI runs with nothing but the shim on PATH.
    ran = run_in_shim(second.path, "fake-cli", tmp_path)
    assert (ran.returncode, ran.stdout) == (0, "hi\n")
