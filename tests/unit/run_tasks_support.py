"""What tests/unit/test_run_tasks.py and test_run_tasks_deaths.py share: a local forge, an
in-process manager (tests/unit/tasks_support.py) and a client on one in-memory bus, and
a :class:`TaskRunner` on them whose reviewer judges the diff."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio

from codeyard.adapters.forge import LocalForge
from codeyard.adapters.memory.clock import SystemClock
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.app.tasks.review import Reviewer
from codeyard.app.tasks.run_tasks import TaskRunConfig, TaskRunner
from codeyard.client import CodeyardClient
from codeyard.domain.task_run import CodingTask, RepoTarget
from tests.unit.tasks_support import Edits, InProcessManager, file_writer

SEED = {"README.md": "# app\n", "shared.txt": "base\n"}


async def verdict_by_diff(prompt: str) -> str:
    """A reviewer that wants changes while the diff still says ``needs-work``."""
    if "needs-work" in prompt:
        return 'Close. {"decision": "request_changes", "feedback": "drop the needs-work line"}'
    return '```json\n{"decision": "approve", "feedback": "good"}\n```'


@dataclass
class Setup:
    forge: LocalForge
    manager: InProcessManager
    client: CodeyardClient
    repo: RepoTarget
    delays: list[float]

    def agent(self, edits: Edits) -> None:
        self.manager.agent = lambda: file_writer(edits)

    def runner(
        self,
        *,
        concurrency: int = 4,
        max_rounds: int = 3,
        retries: int = 3,
        worker_failure_retries: int = 2,
    ) -> TaskRunner:
        async def no_wait(seconds: float) -> None:
            self.delays.append(seconds)

        return TaskRunner(
            self.client,
            self.forge,
            Reviewer(self.forge, verdict_by_diff),
            repo=self.repo,
            config=TaskRunConfig(
                concurrency=concurrency,
                max_rounds=max_rounds,
                rate_limit_retries=retries,
                worker_failure_retries=worker_failure_retries,
            ),
            sleep=no_wait,
        )

    async def main_file(self, path: str) -> str | None:
        return await self.forge.read_file("app", "main", path)


@asynccontextmanager
async def running_setup(tmp_path: Path) -> AsyncIterator[Setup]:
    """A :class:`Setup` whose manager serves until the block ends."""
    forge = LocalForge(tmp_path / "forge", clock=SystemClock())
    await forge.create_repo("app", files=SEED)
    bus = InMemoryEventBus()
    manager = InProcessManager(bus, tmp_path / "workers", lambda: file_writer({}))
    repo = RepoTarget(name="app", clone_url=str(forge.repo_path("app")))
    async with manager.running():
        yield Setup(forge, manager, CodeyardClient(bus, reply_timeout_s=10), repo, [])


def task(name: str, scope: str | None = None) -> CodingTask:
    return CodingTask(id=f"t-{name}", prompt=f"[task:{name}] implement {name}", scope=scope)


async def branch_commits(setup: Setup, branch: str | None, base: str | None) -> list[str]:
    """``git rev-list --reverse base..branch`` in the forge's repository."""
    assert branch is not None
    assert base is not None
    bare = setup.forge.repo_path("app")
    argv = ["git", "-C", str(bare), "rev-list", "--reverse", f"{base}..{branch}"]
    done = await anyio.run_process(argv)
    return done.stdout.decode().split()
