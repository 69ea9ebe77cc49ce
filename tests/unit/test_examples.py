"""The examples in docs/examples run: each orchestration (plain asyncio with TaskRunner,
and the LangGraph graph) against the in-process manager, the local forge and a scripted
reviewer, offline; and the forge set-up their ``main`` uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import asyncio_tasks
import example_support
import langgraph_tasks
import pytest

from codeyard.adapters.forge import LocalForge
from codeyard.adapters.memory.clock import SystemClock
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.app.tasks.review import Ask
from codeyard.client import CodeyardClient
from codeyard.domain.task_run import CodingTask, RepoTarget, TaskOutcome, TaskStatus
from codeyard.domain.worker import NetworkPolicy
from codeyard.ports.code_host import CodeHost
from tests.unit.tasks_support import InProcessManager, file_writer

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


class RunTasks(Protocol):
    """The core both examples expose (their ``main`` only adds the real services)."""

    async def __call__(
        self,
        client: CodeyardClient,
        code_host: CodeHost,
        ask: Ask,
        tasks: Sequence[CodingTask],
        *,
        repo: RepoTarget,
    ) -> list[TaskOutcome]: ...


EXAMPLES: dict[str, RunTasks] = {
    "asyncio": asyncio_tasks.run_tasks,
    "langgraph": langgraph_tasks.run_tasks,
}
EDITS = {
    "[task:front]": {"front.txt": "front\n"},
    "[task:docs]": {"docs.txt": "docs\nneeds-work\n"},
    "task t-docs and asks for changes": {"docs.txt": "docs\n"},  # the feedback round
    "[task:one]": {"shared.txt": "one\n"},
    "[task:two]": {"shared.txt": "two\n"},
}


async def reviewer(prompt: str) -> str:
    """Wants changes while the diff still says ``needs-work``, approves otherwise."""
    if "needs-work" in prompt:
        return 'Almost. {"decision": "request_changes", "feedback": "drop needs-work"}'
    return '```json\n{"decision": "approve"}\n```'


@dataclass
class Offline:
    forge: LocalForge
    manager: InProcessManager
    client: CodeyardClient
    repo: RepoTarget


@pytest.fixture
async def offline(tmp_path: Path) -> AsyncIterator[Offline]:
    forge = LocalForge(tmp_path / "forge", clock=SystemClock())
    await forge.create_repo("app", files={"README.md": "# app\n", "shared.txt": "base\n"})
    bus = InMemoryEventBus()
    manager = InProcessManager(bus, tmp_path / "workers", lambda: file_writer(EDITS))
    repo = RepoTarget(name="app", clone_url=str(forge.repo_path("app")))
    async with manager.running():
        yield Offline(forge, manager, CodeyardClient(bus, reply_timeout_s=10), repo)


def task(name: str) -> CodingTask:
    return CodingTask(id=f"t-{name}", prompt=f"[task:{name}] implement {name}", scope=name)


@pytest.mark.parametrize("example", sorted(EXAMPLES))
async def test_example_merges_reviews_reports_conflicts_and_failures(
    example: str, offline: Offline
) -> None:
    tasks = [task(n) for n in ("front", "docs", "one", "two", "idle")]
    outcomes = await EXAMPLES[example](
        offline.client, offline.forge, reviewer, tasks, repo=offline.repo
    )
    assert [o.task_id for o in outcomes] == [t.id for t in tasks]
    front, docs, one, two, idle = outcomes
    assert (front.status, front.rounds) == (TaskStatus.MERGED, 1), front
    assert (docs.status, docs.rounds, docs.feedback) == (
        TaskStatus.MERGED, 2, ("drop needs-work",),
    )  # fmt: skip
    assert len(docs.commits) == 2  # one per round, on the same branch and worker
    assert docs.pull_request is not None
    assert await offline.forge.comments("app", docs.pull_request.number) == ["drop needs-work"]
    # The two tasks editing the same line: one merged, the other reported, nothing lost.
    assert sorted([one.status, two.status]) == [TaskStatus.CONFLICT, TaskStatus.MERGED]
    (conflict,) = [o for o in (one, two) if o.status is TaskStatus.CONFLICT]
    assert conflict.conflict_files == ("shared.txt",)
    winner = "one" if one.status is TaskStatus.MERGED else "two"
    assert (idle.status, idle.error) == (TaskStatus.FAILED, "no change pushed")
    main = {p: await offline.forge.read_file("app", "main", p) for p in ("front.txt", "docs.txt")}
    assert main == {"front.txt": "front\n", "docs.txt": "docs\n"}
    assert await offline.forge.read_file("app", "main", "shared.txt") == f"{winner}\n"
    # One worker per task, kept across its rounds, deleted when it ends.
    assert sorted(w.rsplit("-", 1)[0] for w in offline.manager.created) == sorted(
        f"w-{t.id}" for t in tasks
    )
    assert sorted(offline.manager.deleted) == sorted(offline.manager.created)


async def test_served_forge_seeds_once_and_gives_workers_a_token_less_url(
    tmp_path: Path,
) -> None:
    async with example_support.served_forge(tmp_path, "app", "claude") as first:
        assert await first.host.read_file("app", "main", "README.md") == "# sample app\n"
        await first.host.commit_files("app", "main", {"kept.txt": "x\n"}, message="keep")
        assert first.repo.clone_url.startswith("http://host.docker.internal:")
        assert first.token not in first.repo.clone_url
        assert first.repo.token_env == example_support.TOKEN_ENV
        assert first.spec.network is NetworkPolicy.ALLOWLIST
        # The worker firewall opens exactly the forge's port.
        assert first.spec.allowed_hosts == (str(urlsplit(first.repo.clone_url).port),)
        assert first.spec.env == {}  # the token goes to developer workers by the runner only
    async with example_support.served_forge(tmp_path, "app", "codex") as again:
        # A second run works on what the first one left.
        assert await again.host.read_file("app", "main", "kept.txt") == "x\n"
        assert again.spec.agent == "codex"
        assert again.token != first.token


def test_the_command_line_needs_redis_and_a_forge_dir() -> None:
    args = example_support.parse_args(
        ["--redis-url", "redis://h:1/0", "--forge-dir", "/tmp/f", "--task", "do x"], "demo"
    )
    assert (args.redis_url, args.forge_dir, args.repo) == ("redis://h:1/0", Path("/tmp/f"), "app")
    assert [t.prompt for t in example_support.tasks_from(args.task)] == ["do x"]
    assert example_support.tasks_from([]) == list(example_support.SAMPLE_TASKS)
    with pytest.raises(SystemExit):
        example_support.parse_args(["--forge-dir", "/tmp/f"], "demo")
