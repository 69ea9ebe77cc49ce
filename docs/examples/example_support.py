"""What both task examples share: command-line options, the local forge served to the
workers, a reviewer that is itself a worker, and printing outcomes.

Nothing here is specific to one orchestration style: ``asyncio_tasks.py`` and
``langgraph_tasks.py`` differ only in how they drive the developers and the reviewer.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from codeyard.adapters.forge import ForgeServer, LocalForge
from codeyard.adapters.memory.clock import SystemClock
from codeyard.app.tasks.review import Ask
from codeyard.client import CodeyardClient
from codeyard.domain.errors import AlreadyExists
from codeyard.domain.task_run import CodingTask, RepoTarget, TaskOutcome
from codeyard.domain.worker import NetworkPolicy, WorkerSpec

#: The worker environment variable git's credential helper reads the forge token from.
TOKEN_ENV = "CODEYARD_GIT_TOKEN"
SEED = {"README.md": "# sample app\n", "app/.keep": ""}
SAMPLE_TASKS = (
    CodingTask(id="t-frontend", scope="frontend", prompt="Add app/frontend.txt saying hello."),
    CodingTask(id="t-backend", scope="backend", prompt="Add app/backend.txt with an API stub."),
    CodingTask(id="t-docs", scope="docs", prompt="Add app/docs.txt describing the app."),
)


def parse_args(argv: Sequence[str] | None, description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--redis-url", required=True, help="the Redis of a running `codeyard serve`"
    )
    parser.add_argument(
        "--forge-dir", required=True, type=Path, help="where the local forge keeps its repos"
    )
    parser.add_argument("--repo", default="app", help="forge repository (created if missing)")
    parser.add_argument("--agent", default="claude", help="agent CLI of every worker")
    parser.add_argument(
        "--task",
        action="append",
        default=[],
        metavar="PROMPT",
        help="a task prompt (repeatable); default: three sample tasks",
    )
    return parser.parse_args(argv)


def tasks_from(prompts: Sequence[str]) -> list[CodingTask]:
    return [CodingTask(prompt=p) for p in prompts] if prompts else list(SAMPLE_TASKS)


@dataclass(frozen=True)
class ServedForge:
    """The forge as the orchestrator (``host``) and the workers (``repo``, ``spec``) see it."""

    host: LocalForge
    repo: RepoTarget
    #: Developer workers: may reach the forge's port, and carry no token yet (see ``token``).
    spec: WorkerSpec
    #: The forge's push token: the orchestrator hands it to developer workers only.
    token: str


@asynccontextmanager
async def served_forge(forge_dir: Path, repo: str, agent: str) -> AsyncIterator[ServedForge]:
    """The local forge under ``forge_dir`` with ``repo`` (seeded when new), served over git
    smart HTTP on a free port with a fresh token, for as long as the block runs. Pull
    requests live in this process: they end with it (the repositories stay)."""
    forge = LocalForge(forge_dir, clock=SystemClock())
    with contextlib.suppress(AlreadyExists):  # else: work on what earlier runs merged
        await forge.create_repo(repo, files=SEED)
    token = secrets.token_hex(16)
    # All interfaces: worker containers reach it through the host gateway.
    async with ForgeServer(forge, host="0.0.0.0", token=token) as server:
        yield ServedForge(
            host=forge,
            repo=RepoTarget(
                name=repo,
                clone_url=server.repo_url(repo, host="host.docker.internal"),
                token_env=TOKEN_ENV,
            ),
            spec=WorkerSpec(
                agent=agent,
                instructions="You are a careful developer. Keep changes small.",
                # The worker firewall lets through only the host ports named here.
                network=NetworkPolicy.ALLOWLIST,
                allowed_hosts=(str(server.port),),
            ),
            token=token,
        )


def worker_reviewer(client: CodeyardClient, spec: WorkerSpec, timeout_s: float = 900) -> Ask:
    """An :data:`Ask` answering each review prompt with a fresh worker (created, asked,
    deleted); ``spec`` should not carry the push token: a reviewer only reads the diff."""

    async def ask(prompt: str) -> str:
        result = await client.run(spec, prompt, timeout_s=timeout_s)
        return result.text

    return ask


def show(outcome: TaskOutcome) -> None:
    """One line per finished task."""
    pr = f"PR #{outcome.pull_request.number}" if outcome.pull_request else "no PR"
    why = f" ({outcome.error})" if outcome.error else ""
    print(f"{outcome.task_id}: {outcome.status.value}, {pr}, {outcome.rounds} round(s){why}")
