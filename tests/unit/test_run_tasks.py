"""run_tasks with real git (the local forge, the worker's git flow) and in-process workers
playing scripted agents: fan-out, review rounds, conflicts, throttling, cancellation. Dead
workers: tests/unit/test_run_tasks_deaths.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from codeyard.adapters.memory.code_agent import Pause, ScriptedCodeAgent, ScriptItem
from codeyard.domain.agent import AgentRequest, AgentResult, ResultStatus
from codeyard.domain.events import InitPayload, ResultPayload
from codeyard.domain.task_run import TaskStatus
from tests.unit.run_tasks_support import Setup, running_setup, task

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with running_setup(tmp_path) as made:
        yield made


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
