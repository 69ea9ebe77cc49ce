"""run_tasks with real git (the local forge, the worker's git flow) and in-process workers
playing scripted agents: fan-out, review rounds, conflicts, throttling, cancellation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from codeyard.adapters.forge import LocalForge
from codeyard.adapters.memory.clock import SystemClock
from codeyard.adapters.memory.code_agent import Pause, ScriptedCodeAgent, ScriptItem
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.app.tasks.review import Reviewer
from codeyard.app.tasks.run_tasks import TaskRunConfig, TaskRunner
from codeyard.client import CodeyardClient
from codeyard.domain.agent import AgentRequest, AgentResult, ResultStatus
from codeyard.domain.events import InitPayload, ResultPayload
from codeyard.domain.task_run import CodingTask, RepoTarget, TaskStatus
from tests.unit.tasks_support import Edits, InProcessManager, file_writer

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]
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

    def runner(self, *, concurrency: int = 4, max_rounds: int = 3, retries: int = 3) -> TaskRunner:
        async def no_wait(seconds: float) -> None:
            self.delays.append(seconds)

        return TaskRunner(
            self.client,
            self.forge,
            Reviewer(self.forge, verdict_by_diff),
            repo=self.repo,
            config=TaskRunConfig(
                concurrency=concurrency, max_rounds=max_rounds, rate_limit_retries=retries
            ),
            sleep=no_wait,
        )

    async def main_file(self, path: str) -> str | None:
        return await self.forge.read_file("app", "main", path)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    forge = LocalForge(tmp_path / "forge", clock=SystemClock())
    await forge.create_repo("app", files=SEED)
    bus = InMemoryEventBus()
    manager = InProcessManager(bus, tmp_path / "workers", lambda: file_writer({}))
    repo = RepoTarget(name="app", clone_url=str(forge.repo_path("app")))
    async with manager.running():
        yield Setup(forge, manager, CodeyardClient(bus, reply_timeout_s=10), repo, [])


def task(name: str, scope: str | None = None) -> CodingTask:
    return CodingTask(id=f"t-{name}", prompt=f"[task:{name}] implement {name}", scope=scope)


async def test_parallel_tasks_are_reviewed_and_merged_one_after_a_second_round(
    setup: Setup,
) -> None:
    setup.agent(
        {
            "[task:front]": {"front.txt": "front\n"},
            "[task:back]": {"back.txt": "back\n"},
            "[task:docs]": {"docs.txt": "docs\nneeds-work\n"},
            "task t-docs and asks for changes": {"docs.txt": "docs\n"},  # feedback round
        }
    )
    tasks = [task("front", "frontend"), task("back", "backend"), task("docs")]
    outcomes = await setup.runner(concurrency=3).run(tasks)
    by_id = {o.task_id: o for o in outcomes}
    assert [o.task_id for o in outcomes] == ["t-front", "t-back", "t-docs"]
    assert {o.status for o in outcomes} == {TaskStatus.MERGED}, outcomes
    assert [by_id[t].rounds for t in ("t-front", "t-back", "t-docs")] == [1, 1, 2]
    assert by_id["t-docs"].feedback == ("drop the needs-work line",)
    assert len(by_id["t-docs"].commits) == 2  # one per round, on the same branch
    for name in ("front", "back", "docs"):
        assert await setup.main_file(f"{name}.txt") == f"{name}\n"
    front = by_id["t-front"].pull_request
    assert front is not None
    assert front.title == "[task:front] implement front"
    assert sorted(setup.manager.deleted) == sorted(setup.manager.created)  # workers removed


async def test_a_conflict_between_parallel_branches_is_reported_not_lost(setup: Setup) -> None:
    setup.agent({"[task:one]": {"shared.txt": "one\n"}, "[task:two]": {"shared.txt": "two\n"}})
    outcomes = await setup.runner(concurrency=2).run([task("one"), task("two")])
    statuses = sorted(o.status.value for o in outcomes)
    assert statuses == ["conflict", "merged"], outcomes
    (conflict,) = [o for o in outcomes if o.status is TaskStatus.CONFLICT]
    assert conflict.conflict_files == ("shared.txt",)
    (merged,) = [o for o in outcomes if o.status is TaskStatus.MERGED]
    winner = "one" if merged.task_id == "t-one" else "two"
    assert await setup.main_file("shared.txt") == f"{winner}\n"


async def test_throttled_turns_are_retried_with_backoff(setup: Setup) -> None:
    calls: list[str] = []

    def flaky(request: AgentRequest) -> list[ScriptItem]:
        calls.append(request.id)
        if len(calls) < 3:
            failed = AgentResult(
                status=ResultStatus.ERROR, provider="scripted", error="API error 529 overloaded"
            )
            return [InitPayload(session_id="s"), ResultPayload(result=failed)]
        Path(request.workdir or ".", "x.txt").write_text("x\n")
        ok = AgentResult(status=ResultStatus.SUCCESS, provider="scripted", text="done")
        return [InitPayload(session_id="s"), ResultPayload(result=ok)]

    setup.manager.agent = lambda: ScriptedCodeAgent(flaky)
    (outcome,) = await setup.runner(retries=3).run([task("x")])
    assert outcome.status is TaskStatus.MERGED, outcome
    assert len(calls) == 3
    assert len(setup.delays) == 2
    assert setup.delays[1] > setup.delays[0]  # exponential backoff


async def test_rounds_run_out_and_unchanged_work_fails(setup: Setup) -> None:
    setup.agent({"[task:stubborn]": {"s.txt": "needs-work\n"}})  # never fixed
    outcomes = await setup.runner(max_rounds=2).run([task("stubborn"), task("idle")])
    stubborn, idle = outcomes
    assert (stubborn.status, stubborn.rounds) == (TaskStatus.CHANGES_REQUESTED, 2)
    assert stubborn.pull_request is not None
    comments = await setup.forge.comments("app", stubborn.pull_request.number)
    assert comments == ["drop the needs-work line"] * 2
    assert idle.status is TaskStatus.FAILED
    assert idle.error == "no change pushed"
    assert await setup.main_file("s.txt") is None


async def test_cancel_stops_unfinished_tasks_and_removes_their_workers(setup: Setup) -> None:
    setup.manager.agent = lambda: ScriptedCodeAgent([InitPayload(session_id="s"), Pause(600)])
    cancel = anyio.Event()
    runner = setup.runner()
    async with anyio.create_task_group() as tg:

        async def cancel_when_started() -> None:
            while len(setup.manager.created) < 2:  # noqa: ASYNC110 - state of another task
                await anyio.sleep(0.01)
            cancel.set()

        tg.start_soon(cancel_when_started)
        outcomes = await runner.run([task("a"), task("b")], cancel=cancel)
    assert [o.status for o in outcomes] == [TaskStatus.CANCELLED] * 2
    assert sorted(w.rsplit("-", 1)[0] for w in setup.manager.deleted) == ["w-t-a", "w-t-b"]
