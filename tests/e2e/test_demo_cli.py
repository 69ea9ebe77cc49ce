"""End to end: ``codeyard demo`` as a subprocess, offline (no API key: the built-in scripted
model), on real Docker: three tasks in parallel worker containers with the real Claude Code
CLI, one sent back by the reviewer and fixed in round two, all merged; the sample
repository it leaves holds the results as branches."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import docker
import pytest

from tests.integration.manager_support import claude_worker_image  # noqa: F401 - fixture

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.usefixtures("claude_worker_image"),
]
CODEYARD = str(Path(sys.executable).with_name("codeyard"))


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    )
    return done.stdout


async def test_demo_runs_three_tasks_offline_and_leaves_the_merged_result(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    sample = tmp_path / "sample"
    drop = ("CODEYARD_", "ANTHROPIC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["COLUMNS"] = "250"
    with anyio.fail_after(840):
        done = await anyio.run_process(
            [CODEYARD, "demo", "--dir", str(sample)], env=env, check=False
        )
    out = done.stdout.decode()
    assert done.returncode == 0, f"{out}\n{done.stderr.decode()}"
    assert "built-in scripted model (offline" in out
    assert f"sample repository kept at {sample}" in out

    # The summary: one row per task (task, status, rounds, branch, commits, PR, cost).
    rows = {
        cells[0]: cells
        for line in out.splitlines()
        if (cells := [c.strip() for c in line.strip("│ ").split("│")])[0].startswith("t-")
        and len(cells) >= 7
    }
    assert set(rows) == {"t-frontend", "t-backend", "t-docs"}, out
    assert {r[1] for r in rows.values()} == {"merged"}
    assert {name: r[2] for name, r in rows.items()} == {
        "t-frontend": "1", "t-backend": "2", "t-docs": "1",
    }  # fmt: skip
    assert rows["t-backend"][3] == "codeyard/t-backend"
    assert all(re.fullmatch(r"#\d+ merged", r[5]) for r in rows.values())
    assert "Remove the TODO marker." in rows["t-backend"][7]

    # The sample repository holds the results; its own main and working tree are as made.
    merged = {
        n: git(sample, "show", f"codeyard/merged:app/{n}.txt")
        for n in ("frontend", "backend", "docs")
    }
    assert merged == {"frontend": "frontend v1\n", "backend": "backend v2\n", "docs": "docs v1\n"}
    subjects = git(sample, "log", "--format=%s", "main..codeyard/merged").splitlines()
    assert sorted(s.split(":")[0] for s in subjects) == [
        "feat(backend)",
        "feat(docs)",
        "feat(frontend)",
    ]
    assert git(sample, "show", "codeyard/t-backend:app/backend.txt") == "backend v2\n"
    assert git(sample, "status", "--porcelain") == ""
    assert git(sample, "symbolic-ref", "--short", "HEAD").strip() == "main"
    assert not (sample / "app" / "frontend.txt").exists()
