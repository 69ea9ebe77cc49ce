"""Issue #6 acceptance: three tasks on a sample repo run in parallel worker containers (the
real Claude Code CLI against the scripted model, through ``codeyard serve``), each pushes a
branch to the local forge over HTTP with a token; a reviewer agent (also a worker) approves
two and asks for changes on one, which comes back fixed in round two; all three end merged."""

from __future__ import annotations

import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest

from codeyard.adapters.forge import ForgeServer, LocalForge
from codeyard.adapters.memory.clock import SystemClock
from codeyard.app.tasks.review import Reviewer
from codeyard.app.tasks.run_tasks import TaskRunConfig, TaskRunner
from codeyard.client import CodeyardClient
from codeyard.domain.task_run import CodingTask, RepoTarget, TaskStatus
from codeyard.domain.worker import NetworkPolicy, WorkerSpec
from codeyard.testing.model_server import ModelServer, Router, Scenario, Text
from codeyard.testing.model_server.tools import write_file
from tests.e2e.serve_support import owned_containers, remove_owned, serve_env, serving
from tests.integration.manager_support import claude_worker_image  # noqa: F401 - fixture
from tests.services.worker_redis import WorkerRedis

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.usefixtures("claude_worker_image"),
]
TOKEN_ENV = "CODEYARD_GIT_TOKEN"
APPROVE = '{"decision": "approve", "feedback": "Looks good."}'
REJECT = '{"decision": "request_changes", "feedback": "Remove the TODO marker."}'


def developer(name: str, *rounds: str) -> Scenario:
    """Each round writes ``app/<name>.txt`` with the round's content, then says it is done."""
    turns: list[list[object]] = []
    for number, content in enumerate(rounds, start=1):
        path = f"/workspace/app/{name}.txt"
        turns.append([Text(f"Round {number}."), write_file("claude", path, content)])
        turns.append([Text(f"Done with {name}, round {number}.")])
    return Scenario(turns=turns)  # type: ignore[arg-type]


def scripted_model() -> Router:
    return Router(
        {
            "[task:frontend]": developer("frontend", "frontend v1\n"),
            "[task:backend]": developer("backend", "backend v1\nTODO\n", "backend v2\n"),
            "[task:docs]": developer("docs", "docs v1\n"),
            "[review:approve]": Scenario.text(f"Verdict:\n{APPROVE}"),
            "[review:reject]": Scenario.text(f"Verdict:\n{REJECT}"),
        }
    )


FORGE_TOKEN = secrets.token_hex(16)


@pytest.fixture
async def forge(tmp_path: Path) -> AsyncIterator[ForgeServer]:
    local = LocalForge(tmp_path / "forge", clock=SystemClock())
    await local.create_repo("app", files={"README.md": "# sample app\n", "app/.keep": ""})
    # All interfaces: worker containers clone and push through the host gateway.
    async with ForgeServer(local, host="0.0.0.0", token=FORGE_TOKEN) as server:
        yield server


def subjects(bare: Path, branch: str) -> list[str]:
    done = subprocess.run(
        ["git", "--git-dir", str(bare), "log", "--format=%s", branch],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.splitlines()


async def test_three_parallel_tasks_are_reviewed_and_all_end_merged(
    worker_redis_db: WorkerRedis,
    postgres_db: str,
    forge: ForgeServer,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    owner = "e2e-tasks-" + uuid.uuid4().hex[:6]
    async with ModelServer(scripted_model(), host="0.0.0.0") as model:
        env = serve_env(
            owner=owner, redis_url=worker_redis_db.url, postgres_dsn=postgres_db, server=model
        )
        try:
            async with (
                serving(env, tmp_path / "serve.log"),
                CodeyardClient.connect(worker_redis_db.url) as client,
            ):
                spec = WorkerSpec(
                    instructions="You are a careful developer.",
                    network=NetworkPolicy.ALLOWLIST,
                    allowed_hosts=(str(forge.port),),
                )

                async def ask(prompt: str) -> str:
                    # The scripted reviewer answers by what the diff shows.
                    marker = "[review:reject]" if "TODO" in prompt else "[review:approve]"
                    result = await client.run(spec, f"{marker}\n{prompt}", timeout_s=180)
                    return result.text

                runner = TaskRunner(
                    client,
                    forge.forge,
                    Reviewer(forge.forge, ask),
                    repo=RepoTarget(
                        name="app",
                        clone_url=forge.repo_url("app", host="host.docker.internal"),
                        token_env=TOKEN_ENV,
                    ),
                    spec=spec,
                    git_token=FORGE_TOKEN,
                    config=TaskRunConfig(concurrency=3, max_rounds=3, turn_timeout_s=300),
                )
                tasks = [
                    CodingTask(id=f"t-{n}", prompt=f"[task:{n}] build the {n}", scope=n)
                    for n in ("frontend", "backend", "docs")
                ]
                outcomes = await runner.run(tasks)
                records = [
                    (await client.status(o.worker_id)).model_dump_json()
                    for o in outcomes
                    if o.worker_id
                ]
                main = {
                    n: await forge.forge.read_file("app", "main", f"app/{n}.txt")
                    for n in ("frontend", "backend", "docs")
                }
                log = subjects(forge.forge.repo_path("app"), "main")
            leftovers = owned_containers(docker_client, owner)
        finally:
            remove_owned(docker_client, owner)
    by_id = {o.task_id: o for o in outcomes}
    assert {o.status for o in outcomes} == {TaskStatus.MERGED}, outcomes
    assert (by_id["t-frontend"].rounds, by_id["t-backend"].rounds, by_id["t-docs"].rounds) == (
        1, 2, 1,
    )  # fmt: skip
    assert by_id["t-backend"].feedback == ("Remove the TODO marker.",)
    assert main == {"frontend": "frontend v1\n", "backend": "backend v2\n", "docs": "docs v1\n"}
    assert sum("feat(" in line for line in log) == 3  # one squash commit per task
    assert all(o.commits for o in outcomes)
    assert leftovers == []  # developer and reviewer workers all deleted
    assert FORGE_TOKEN not in (tmp_path / "serve.log").read_text()
    assert len(records) == 3
    assert not any(FORGE_TOKEN in r for r in records)  # never in specs the registry keeps
