"""run_tasks with real git (the local forge, the worker's git flow) and in-process workers
playing scripted agents: fan-out, review rounds, conflicts, throttling, cancellation, dead
workers replaced up to a limit, then dead-lettered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from codeyard.adapters.forge import LocalForge
from codeyard.adapters.memory.clock import SystemClock
from codeyard.adapters.memory.code_agent import (
    Pause,
    ScriptedCodeAgent,
    ScriptItem,
    default_script,
)
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.app.tasks.progress import worker_death
from codeyard.app.tasks.review import Reviewer
from codeyard.app.tasks.run_tasks import TaskRunConfig, TaskRunner
from codeyard.client import CodeyardClient
from codeyard.domain.agent import AgentRequest, AgentResult, ResultStatus
from codeyard.domain.events import EventSequencer, InitPayload, ResultPayload
from codeyard.domain.streams import worker_output_stream
from codeyard.domain.task_run import CodingTask, RepoTarget, TaskStatus
from codeyard.domain.worker_io import EVENT_FIELD, TYPE_FIELD
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


class Reaper:
    """Kills workers the way the manager reports a dead container: the agent hangs (a
    container gone silent) and a failed result with the death reason lands on the worker's
    output stream. ``doom`` maps a prompt marker to the reasons of its next deaths;
    ``in_run=False``: the result has no run id (the manager knew of no run under way)."""

    def __init__(
        self, setup: Setup, edits: Edits, doom: dict[str, list[str]], *, in_run: bool = True
    ) -> None:
        self.setup = setup
        self.edits = edits
        self.doom = doom
        self.in_run = in_run
        self.prompts: list[tuple[str, str]] = []  # (worker id, prompt) of every turn
        self.found: dict[str, set[str]] = {}  # worker id -> files its checkout had
        self.send, self.receive = anyio.create_memory_object_stream[tuple[str, str, str]](100)

    def agent(self) -> ScriptedCodeAgent:
        def script(request: AgentRequest) -> list[ScriptItem]:
            assert request.worker_id is not None
            assert request.workdir is not None
            workdir = Path(request.workdir)
            self.prompts.append((request.worker_id, request.prompt))
            self.found[request.worker_id] = {p.name for p in workdir.glob("*.txt")}
            marker = next((m for m in self.doom if m in request.prompt and self.doom[m]), None)
            if marker is not None:
                reason = self.doom[marker].pop(0)
                self.send.send_nowait((request.worker_id, request.id, reason))
                return [InitPayload(session_id="s"), Pause(600)]
            keys = sorted(self.edits, key=len, reverse=True)  # as file_writer picks them
            chosen = next((k for k in keys if k in request.prompt), None)
            for path, content in (self.edits[chosen] if chosen else {}).items():
                (workdir / path).write_text(content, encoding="utf-8")
            return list(default_script(request))

        return ScriptedCodeAgent(script)

    async def run(self) -> None:
        async for worker_id, run_id, reason in self.receive:
            died = AgentResult(
                status=ResultStatus.ERROR,
                provider="scripted",
                error=f"the worker container ended unexpectedly ({reason})",
                terminal_reason=reason,
            )
            stamp = EventSequencer(worker_id=worker_id, run_id=run_id if self.in_run else None)
            event = stamp.stamp(ResultPayload(result=died))
            await self.setup.manager.bus.publish(
                worker_output_stream(worker_id),
                {EVENT_FIELD: event.model_dump_json(), TYPE_FIELD: event.payload.type},
            )


async def test_a_dead_worker_is_replaced_and_the_next_continues_the_pushed_branch(
    setup: Setup,
) -> None:
    edits = {
        "[task:docs]": {"docs.txt": "docs\nneeds-work\n"},
        "task t-docs and asks for changes": {"docs.txt": "docs\n"},
    }
    reaper = Reaper(setup, edits, {"task t-docs and asks for changes": ["container_killed"]})
    setup.manager.agent = reaper.agent
    async with anyio.create_task_group() as tg:
        tg.start_soon(reaper.run)
        (outcome,) = await setup.runner().run([task("docs")])
        tg.cancel_scope.cancel()
    assert outcome.status is TaskStatus.MERGED, outcome
    assert outcome.worker_failures == ("container_killed",)
    assert (outcome.rounds, outcome.error) == (2, None)
    first, second = setup.manager.created
    assert outcome.worker_id == second
    assert sorted(setup.manager.deleted) == sorted([first, second])  # the dead one too
    # Round 2 ran on the second worker: its checkout had round 1's pushed commit, and its
    # prompt (no session to resume) repeats the task before the feedback.
    assert "docs.txt" in reaper.found[second]
    (replayed,) = [p for w, p in reaper.prompts if w == second]
    assert replayed.startswith("[task:docs] implement docs")
    assert "drop the needs-work line" in replayed
    assert await setup.main_file("docs.txt") == "docs\n"


async def test_a_task_whose_workers_keep_dying_is_dead_lettered_with_the_reasons(
    setup: Setup,
) -> None:
    deaths = ["container_killed", "container_oom", "container_exited_1"]
    reaper = Reaper(setup, {"[task:ok]": {"ok.txt": "ok\n"}}, {"[task:doomed]": list(deaths)})
    setup.manager.agent = reaper.agent
    async with anyio.create_task_group() as tg:
        tg.start_soon(reaper.run)
        ok, doomed = await setup.runner().run([task("ok"), task("doomed")])
        tg.cancel_scope.cancel()
    assert (ok.status, ok.worker_failures) == (TaskStatus.MERGED, ())
    assert doomed.status is TaskStatus.FAILED
    assert doomed.worker_failures == tuple(deaths)  # default: 2 retries, 3 workers
    assert doomed.error == (
        "dead_letter: the task's worker died 3 times (2 retries allowed): "
        "container_killed, container_oom, container_exited_1"
    )
    assert doomed.rounds == 0
    assert doomed.pull_request is None
    doomed_workers = [w for w in setup.manager.created if w.startswith("w-t-doomed-")]
    assert len(doomed_workers) == 3
    assert sorted(setup.manager.deleted) == sorted(setup.manager.created)
    # Each replacement's runs are named apart from the dead ones'.
    assert [w.rsplit("-", 1)[0] for w, _ in reaper.prompts].count("w-t-doomed") == 3


async def test_with_no_worker_retries_a_death_fails_the_task(setup: Setup) -> None:
    doom = {"[task:x]": ["container_vanished", "container_killed"]}
    reaper = Reaper(setup, {}, doom, in_run=False)
    setup.manager.agent = reaper.agent
    runner = TaskRunner(
        setup.client,
        setup.forge,
        Reviewer(setup.forge, verdict_by_diff),
        repo=setup.repo,
        config=TaskRunConfig(worker_failure_retries=0),
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(reaper.run)
        (outcome,) = await runner.run([task("x")])
        tg.cancel_scope.cancel()
    assert outcome.status is TaskStatus.FAILED
    assert outcome.worker_failures == ("container_vanished",)
    assert outcome.error is not None
    assert outcome.error.startswith("dead_letter:")
    assert len(setup.manager.created) == 1 == len(setup.manager.deleted)


@pytest.mark.parametrize(
    ("reason", "died"),
    [
        ("container_killed", True),
        ("container_oom", True),
        ("container_terminated", True),
        ("container_vanished", True),
        ("container_exited_3", True),
        ("container_not_found", False),  # an error code, not the manager's death report
        ("git_failed", False),
        (None, False),
    ],
)
def test_only_the_managers_death_reasons_count_as_a_dead_worker(
    reason: str | None, *, died: bool
) -> None:
    result = AgentResult(status=ResultStatus.ERROR, provider="x", terminal_reason=reason)
    assert worker_death(result) == (reason if died else None)
