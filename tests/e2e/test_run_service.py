"""Issue #7 acceptance: ``codeyard run --service redis://...`` runs its tasks on a running
``codeyard serve`` (a subprocess on Docker, Redis and Postgres) instead of the embedded
service; the model endpoint is the service's own (CODEYARD_MANAGER__AGENT_BASE_URL, the
scripted model server), so ``--base-url`` with ``--service`` is a usage error.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import docker
import pytest

from codeyard.testing.model_server import ModelServer, Router, Scenario, Text
from codeyard.testing.model_server.tools import write_file
from tests.e2e.serve_support import API_KEY, CODEYARD, remove_owned, serve_env, serving
from tests.integration.manager_support import claude_worker_image  # noqa: F401 - fixture
from tests.services.worker_redis import WorkerRedis

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.usefixtures("claude_worker_image"),
]
APPROVE = '{"decision": "approve", "feedback": "Fine."}'
PROMPT = "[task] write notes.txt"
NOTES = "written through the service\n"
RUN_TIMEOUT_S = 600
AMBIENT = ("CODEYARD_", "ANTHROPIC_")


@pytest.fixture
async def model() -> AsyncIterator[ModelServer]:
    developer = Scenario(
        turns=[
            [Text("Writing the notes."), write_file("claude", "/workspace/notes.txt", NOTES)],
            [Text("Done: notes.txt written.")],
        ]
    )
    router = Router({"[review]": Scenario.text(f"Verdict: {APPROVE}")}, default=developer)
    async with ModelServer(router, host="0.0.0.0") as server:
        yield server


@pytest.fixture
def owner(docker_client: docker.DockerClient) -> Iterator[str]:
    owner = "e2e-run-" + uuid.uuid4().hex[:8]
    yield owner
    remove_owned(docker_client, owner)


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
    return path


def run_env() -> dict[str, str]:
    """The user's shell: no CODEYARD_* settings, no provider key (the service has its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(AMBIENT)}
    return {**env, "COLUMNS": "400"}


async def test_run_against_a_running_service_merges_the_task(
    model: ModelServer,
    owner: str,
    worker_redis_db: WorkerRedis,
    postgres_db: str,
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "repo")
    env = serve_env(
        owner=owner, redis_url=worker_redis_db.url, postgres_dsn=postgres_db, server=model
    )
    argv = [CODEYARD, "run", "--service", worker_redis_db.url, "--repo", str(repo), "--json"]
    async with serving(env, tmp_path / "serve.log") as serve:
        started = time.monotonic()
        with anyio.fail_after(RUN_TIMEOUT_S):
            done = await anyio.run_process([*argv, PROMPT], env=run_env(), check=False)
        print(f"\ncodeyard run --service took {time.monotonic() - started:.1f}s")
        log = serve.output()
    stdout, stderr = done.stdout.decode(), done.stderr.decode()

    assert done.returncode == 0, f"{stdout}\n{stderr}\n[serve]\n{log}"
    doc = json.loads(stdout)
    [task] = doc["tasks"]
    assert task["status"] == "merged", task
    assert task["worker_id"]
    assert set(doc["branches"]) == {"codeyard/t-1", "codeyard/merged"}
    assert git(repo, "show", "codeyard/merged:notes.txt") == NOTES
    # The service's endpoint and key were used: the run itself was given neither.
    requests = model.model_requests()
    assert model.routed_requests("[review]"), "the reviewer never reached the model server"
    assert [r for r in requests if r.extra.get("route") is None], "no developer request"
    assert all(API_KEY in " ".join(r.headers.values()) for r in requests)
    assert API_KEY not in stdout + stderr


async def test_run_with_service_refuses_a_base_url(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    argv = [
        CODEYARD, "run", "--service", "redis://127.0.0.1:1/0", "--repo", str(repo),
        "--base-url", "http://127.0.0.1:9/", "--json", PROMPT,
    ]  # fmt: skip
    with anyio.fail_after(60):
        done = await anyio.run_process(argv, env=run_env(), check=False)
    stderr = " ".join(done.stderr.decode().split())
    assert done.returncode == 2, stderr
    assert "--base-url/--api-key cannot be applied to a running service" in stderr
    assert "CODEYARD_MANAGER__AGENT_BASE_URL" in stderr
    assert done.stdout == b""
