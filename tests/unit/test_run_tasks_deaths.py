"""run_tasks when workers die (tests/unit/test_run_tasks.py has the rest): a dead worker is
replaced by a new one continuing the task's pushed branch, up to a limit, then the task is
dead-lettered; commits pushed by a worker before it died stay in the outcome."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from codeyard.app.tasks.progress import worker_death
from codeyard.domain.agent import AgentResult, ResultStatus
from codeyard.domain.task_run import TaskStatus
from tests.unit.run_tasks_support import Setup, branch_commits, running_setup, task
from tests.unit.worker_deaths_support import Reaper

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with running_setup(tmp_path) as made:
        yield made


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
    runner = setup.runner(worker_failure_retries=0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(reaper.run)
        (outcome,) = await runner.run([task("x")])
        tg.cancel_scope.cancel()
    assert outcome.status is TaskStatus.FAILED
    assert outcome.worker_failures == ("container_vanished",)
    assert outcome.error is not None
    assert outcome.error.startswith("dead_letter:")
    assert len(setup.manager.created) == 1 == len(setup.manager.deleted)


async def test_commits_a_dead_worker_pushed_stay_in_the_outcome_with_the_replacements(
    setup: Setup,
) -> None:
    # Round 1's worker commits and pushes docs.txt, reports it, then dies before its
    # result: the round runs again on a new worker, whose checkout has the pushed commit.
    # It writes the same docs.txt (nothing new: the task's change is on the branch already)
    # and, for round 2's feedback, a new one.
    edits = {
        "[task:docs]": {"docs.txt": "docs\nneeds-work\n"},
        "task t-docs and asks for changes": {"docs.txt": "docs\n"},
    }
    reaper = Reaper(setup, edits, {"[task:docs]": ["container_killed"]}, push_first=True)
    setup.manager.agent = reaper.agent
    base = await setup.forge.branch_sha("app", "main")
    async with anyio.create_task_group() as tg:
        tg.start_soon(reaper.run)
        (outcome,) = await setup.runner().run([task("docs")])
        tg.cancel_scope.cancel()
    assert outcome.status is TaskStatus.MERGED, outcome
    assert (outcome.worker_failures, outcome.rounds) == (("container_killed",), 2)
    _first, second = setup.manager.created
    assert outcome.worker_id == second
    assert "docs.txt" in reaper.found[second]
    # Every commit the branch gained over the base, in order, each once: the dead
    # worker's first, then the replacement's round-2 commit.
    (dead,) = reaper.pushed
    assert outcome.commits[0] == dead
    assert outcome.commits == tuple(await branch_commits(setup, outcome.branch, base))
    assert len(outcome.commits) == 2
    assert await setup.main_file("docs.txt") == "docs\n"


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
