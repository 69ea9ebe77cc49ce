"""Issue #7 acceptance: ``codeyard run --provider P --repo PATH --base-url URL --api-key K
--json PROMPT`` works exactly like that for all five providers.

Each run is a real subprocess with the embedded service (no Redis, no Postgres), a git
repository in tmp_path and one scripted model server (every dialect on one port). Review
is on (the default), so both the developer and the reviewer are workers of provider P:
the review prompt starts with ``[review]`` and is routed to an approving verdict, every
other conversation gets P's developer script (turn 0 writes ``/workspace/notes.txt``, the
repository's root in the worker, with P's own write tool; turn 1 sums up).

The worker image of each provider is built ahead of the run (minutes, cold; the same
recipe and tags as the embedded manager and tests/e2e/test_providers_docker.py), so the
build and the run are timed apart (``-s`` shows them).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread
import docker
import pytest

from codeyard.adapters.docker.image_cache import LocalImageUsage
from codeyard.app.manager.images import docker_worker_images
from codeyard.app.settings import Settings
from codeyard.domain.worker import WorkerSpec
from codeyard.testing.model_server import ModelServer, Router, Scenario, Text
from codeyard.testing.model_server.tools import TOOLS
from tests.integration.manager_support import BUILD_TIMEOUT_S, drop_stale_worker_images

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.timeout(1800),
]
CODEYARD = str(Path(sys.executable).with_name("codeyard"))
APPROVE = '{"decision": "approve", "feedback": "Fine."}'
PROMPT = "[task] write notes.txt"
NOTES = "notes from the developer\n"
RUN_TIMEOUT_S = 900
#: provider -> the model API dialect its CLI speaks against the scripted server.
DIALECTS = {
    "claude": "anthropic",
    "codex": "responses",
    "gemini": "gemini",
    "droid": "anthropic",
    "opencode": "chat",
}
#: Variables through which a provider's key or endpoint could reach the run unasked.
AMBIENT = ("CODEYARD_", "ANTHROPIC_", "OPENAI_", "CODEX_", "GEMINI_", "GOOGLE_", "FACTORY_")


def script(provider: str) -> Router:
    developer = Scenario(
        turns=[
            [Text("Writing the notes."), TOOLS[provider].write_file("/workspace/notes.txt", NOTES)],
            [Text("Done: notes.txt written.")],
        ]
    )
    return Router({"[review]": Scenario.text(f"Verdict: {APPROVE}")}, default=developer)


@pytest.fixture(params=list(DIALECTS))
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def model(provider: str) -> AsyncIterator[ModelServer]:
    """The scripted model, on all interfaces (the manager maps loopback for containers)."""
    async with ModelServer(script(provider), host="0.0.0.0") as server:
        yield server


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


async def build_image(provider: str, client: docker.DockerClient) -> float:
    """Build (or find) ``provider``'s worker image; the seconds it took."""
    started = time.monotonic()
    images = await docker_worker_images(Settings(), client, usage=LocalImageUsage())
    spec = WorkerSpec(agent=provider)
    with anyio.fail_after(BUILD_TIMEOUT_S):
        ref = await images.ensure(spec)
    await anyio.to_thread.run_sync(drop_stale_worker_images, client, images, spec, ref)
    return time.monotonic() - started


async def test_run_merges_a_reviewed_task_with_every_provider(
    provider: str, model: ModelServer, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    built = await build_image(provider, docker_client)
    repo = make_repo(tmp_path / "repo")
    key = f"sk-codeyard-run-{provider}-{secrets.token_hex(16)}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(AMBIENT)}
    argv = [
        CODEYARD, "run", "--provider", provider, "--repo", str(repo),
        "--base-url", f"http://127.0.0.1:{model.port}", "--api-key", key, "--json", PROMPT,
    ]  # fmt: skip
    started = time.monotonic()
    with anyio.fail_after(RUN_TIMEOUT_S):
        done = await anyio.run_process(argv, env=env, check=False)
    ran = time.monotonic() - started
    print(f"\n{provider}: image ready in {built:.1f}s; codeyard run took {ran:.1f}s")
    stdout, stderr = done.stdout.decode(), done.stderr.decode()

    assert done.returncode == 0, f"{stdout}\n{stderr}"
    doc = json.loads(stdout)
    [task] = doc["tasks"]
    assert task["status"] == "merged", task
    assert task["prompt"] == PROMPT
    assert set(doc["branches"]) == {"codeyard/t-1", "codeyard/merged"}
    assert git(repo, "show", "codeyard/merged:notes.txt") == NOTES
    # Both the developer and the reviewer were this provider's CLI on the scripted model.
    requests = model.model_requests()
    assert {r.dialect for r in requests} == {DIALECTS[provider]}
    assert model.routed_requests("[review]"), "the reviewer never reached the model server"
    assert [r for r in requests if r.extra.get("route") is None], "no developer request"
    assert key not in stdout + stderr
