"""``codeyard run`` as a real subprocess: the embedded service, a worker running the real
Claude Code CLI against the scripted model server, a git repository in tmp_path.

The JSON run checks the documented output, the branches brought home and that the
repository's working tree and current branch are untouched; the PTY run is the issue's
terminal recording check: the live table is redrawn as the task moves on.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from codeyard.testing.model_server import ModelServer, Router, Scenario, Text
from codeyard.testing.model_server.tools import write_file
from tests.integration.manager_support import claude_worker_image  # noqa: F401 - fixture

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.usefixtures("claude_worker_image"),
]
CODEYARD = str(Path(sys.executable).with_name("codeyard"))
APPROVE = '{"decision": "approve", "feedback": "Fine."}'
PROMPT = "[task:note] write note.txt"


def script() -> Router:
    developer = Scenario(
        turns=[
            [Text("Writing the note."), write_file("claude", "/workspace/note.txt", "hello\n")],
            [Text("Done.")],
        ]
    )
    # The review prompt starts with "[review]": it routes the reviewer's conversation.
    return Router({"[task:note]": developer, "[review]": Scenario.text(f"Verdict: {APPROVE}")})


@pytest.fixture
async def model() -> AsyncIterator[str]:
    """The scripted model's base URL (loopback: the manager maps it for containers)."""
    async with ModelServer(script(), host="0.0.0.0") as server:
        yield f"http://127.0.0.1:{server.base_url.rsplit(':', 1)[1]}"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return done.stdout


def make_repo(path: Path) -> Path:
    path.mkdir()
    git(path, "init", "--quiet", "--initial-branch", "main")
    (path / "README.md").write_text("# sample\n")
    git(path, "add", "README.md")
    git(path, "-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "init")
    # Uncommitted work that the run must leave alone.
    (path / "README.md").write_text("# sample\nlocal edit\n")
    (path / "scratch.txt").write_text("untracked\n")
    return path


def run_env() -> dict[str, str]:
    drop = ("CODEYARD_", "ANTHROPIC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return {**env, "COLUMNS": "200"}


def command(repo: Path, base_url: str, *extra: str) -> list[str]:
    return [
        CODEYARD, "run", "--provider", "claude", "--repo", str(repo),
        "--base-url", base_url, "--api-key", "sk-ant-run-test", *extra, PROMPT,
    ]  # fmt: skip


async def test_run_json_merges_the_task_and_brings_the_branches_home(
    model: str, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    before = (git(repo, "status", "--porcelain"), git(repo, "symbolic-ref", "HEAD"))
    done = await anyio.run_process(command(repo, model, "--json"), env=run_env(), check=False)
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, f"{stdout}\n{stderr}"
    doc = json.loads(stdout)  # the whole stdout is one JSON document
    assert doc["repo"] == str(repo.resolve())
    assert doc["base"] == "main"
    [task] = doc["tasks"]
    assert task["task_id"] == "t-1"
    assert task["prompt"] == PROMPT
    assert task["status"] == "merged", task
    assert task["rounds"] == 1
    assert task["local_branch"] == "codeyard/t-1"
    assert task["commits"]
    assert task["pull_request"]["state"] == "merged"
    assert set(doc["branches"]) == {"codeyard/t-1", "codeyard/merged"}
    assert git(repo, "show", "codeyard/t-1:note.txt") == "hello\n"
    assert git(repo, "show", "codeyard/merged:note.txt") == "hello\n"
    assert git(repo, "rev-parse", "codeyard/merged").strip() == doc["branches"]["codeyard/merged"]
    # The working tree, the index and the current branch are as they were.
    assert (git(repo, "status", "--porcelain"), git(repo, "symbolic-ref", "HEAD")) == before
    assert (repo / "README.md").read_text() == "# sample\nlocal edit\n"
    assert not (repo / "note.txt").exists()
    assert "sk-ant-run-test" not in stdout + stderr


def _run_on_pty(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run ``argv`` with stdout on a pseudo-terminal (200x50); its exit code and output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    with subprocess.Popen(argv, stdout=slave, stderr=subprocess.PIPE, env=env) as process:
        os.close(slave)
        chunks: list[bytes] = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = process.wait(timeout=60)
        assert process.stderr is not None
        err = process.stderr.read().decode(errors="replace")
    os.close(master)
    out = b"".join(chunks).decode(errors="replace")
    return code, out + "\n[stderr]\n" + err


async def test_run_on_a_terminal_shows_a_live_table_that_updates(
    model: str, tmp_path: Path
) -> None:
    repo = make_repo(tmp_path / "repo")
    code, out = await anyio.to_thread.run_sync(_run_on_pty, command(repo, model), run_env())
    assert code == 0, out
    # Each redraw of the live table prints the task's row; it moved through several states.
    statuses = re.findall(r"t-1\s*│\s*([a-z_]+)", out)
    assert "merged" in statuses, out
    assert len(set(statuses)) >= 3, statuses  # e.g. starting, coding, reviewing, merged
    assert "\x1b[" in out  # drawn with terminal control sequences, not plain lines
    assert "codeyard/merged" in out  # where the results are
