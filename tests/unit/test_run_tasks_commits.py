"""run_tasks' commits come from the code host: a push whose worker died before reporting it
is still reviewed, merged and listed; the workers' reports are the fallback when the host
cannot list the commits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from codeyard.domain.code_host import CodeHostUnavailable
from codeyard.domain.task_run import TaskStatus
from tests.unit.run_tasks_support import Setup, branch_commits, running_setup, task
from tests.unit.worker_deaths_support import Reaper

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with running_setup(tmp_path) as made:
        yield made


async def test_a_push_whose_worker_died_before_reporting_it_is_merged_and_listed(
    setup: Setup,
) -> None:
    # The first worker commits and pushes docs.txt, then dies before its git report gets
    # out. The replacement writes the same docs.txt: nothing new to commit or push. The
    # branch holds the change all the same: the task must not fail "no change pushed".
    reaper = Reaper(
        setup,
        {"[task:docs]": {"docs.txt": "docs\n"}},
        {"[task:docs]": ["container_killed"]},
        push_first=True,
        report_push=False,
    )
    setup.manager.agent = reaper.agent
    base = await setup.forge.branch_sha("app", "main")
    async with anyio.create_task_group() as tg:
        tg.start_soon(reaper.run)
        (outcome,) = await setup.runner().run([task("docs")])
        tg.cancel_scope.cancel()
    assert outcome.status is TaskStatus.MERGED, outcome
    assert (outcome.worker_failures, outcome.rounds, outcome.error) == (
        ("container_killed",),
        1,
        None,
    )
    _first, second = setup.manager.created
    assert "docs.txt" in reaper.found[second]  # the replacement found the change there
    (dead,) = reaper.pushed
    assert outcome.commits == (dead,)
    assert await branch_commits(setup, outcome.branch, base) == [dead]
    assert outcome.pull_request is not None
    assert outcome.pull_request.head_sha == dead
    assert await setup.main_file("docs.txt") == "docs\n"


async def test_an_agent_that_pushed_nothing_ever_still_fails(setup: Setup) -> None:
    setup.agent({})  # a successful turn that changes no file
    (outcome,) = await setup.runner().run([task("idle")])
    assert (outcome.status, outcome.error) == (TaskStatus.FAILED, "no change pushed")
    assert (outcome.commits, outcome.pull_request) == ((), None)


async def test_the_reports_commits_stand_when_the_host_cannot_list_them(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []

    async def unavailable(repo: str, *, head: str, base: str) -> list[str]:
        calls.append((head, base))
        raise CodeHostUnavailable("the host is down", repo=repo)

    monkeypatch.setattr(setup.forge, "branch_commits", unavailable)
    setup.agent({"[task:api]": {"api.txt": "api\n"}})
    base = await setup.forge.branch_sha("app", "main")
    (outcome,) = await setup.runner().run([task("api")])
    assert outcome.status is TaskStatus.MERGED, outcome
    assert len(calls) == 1  # the PR's commits, once, at the end
    assert outcome.commits == tuple(await branch_commits(setup, outcome.branch, base))
    assert len(outcome.commits) == 1
