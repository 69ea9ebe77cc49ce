"""run_tasks when workers die (tests/unit/test_run_tasks.py has the rest): a dead worker is
replaced by a new one continuing the task's pushed branch, up to a limit, then the task is
dead-lettered; commits pushed by a worker before it died stay in the outcome."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from codeyard.adapters.memory.code_agent import (
    Pause,
    ScriptedCodeAgent,
    ScriptItem,
    default_script,
)
from codeyard.app.tasks.progress import worker_death
from codeyard.domain.agent import AgentRequest, AgentResult, ResultStatus
from codeyard.domain.code_host import GitReport
from codeyard.domain.events import (
    EventPayload,
    EventSequencer,
    InitPayload,
    LifecyclePayload,
    ResultPayload,
)
from codeyard.domain.streams import worker_output_stream
from codeyard.domain.task_run import TaskStatus
from codeyard.domain.worker_io import EVENT_FIELD, TYPE_FIELD
from tests.unit.run_tasks_support import Setup, running_setup, task
from tests.unit.tasks_support import Edits

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    async with running_setup(tmp_path) as made:
        yield made


@dataclass(frozen=True)
class _Death:
    worker_id: str
    run_id: str
    reason: str
    #: The git report the worker got out before it died (``push_first``).
    report: GitReport | None = None


class Reaper:
    """Kills workers the way the manager reports a dead container: the agent hangs (a
    container gone silent) and a failed result with the death reason lands on the worker's
    output stream. ``doom`` maps a prompt marker to the reasons of its next deaths;
    ``in_run=False``: the result has no run id (the manager knew of no run under way);
    ``push_first``: a doomed turn writes its edits, commits and pushes them, and its git
    report is out before the death (the worker died between its push and its result)."""

    def __init__(
        self,
        setup: Setup,
        edits: Edits,
        doom: dict[str, list[str]],
        *,
        in_run: bool = True,
        push_first: bool = False,
    ) -> None:
        self.setup = setup
        self.edits = edits
        self.doom = doom
        self.in_run = in_run
        self.push_first = push_first
        self.pushed: list[str] = []  # commits doomed turns pushed
        self.prompts: list[tuple[str, str]] = []  # (worker id, prompt) of every turn
        self.found: dict[str, set[str]] = {}  # worker id -> files its checkout had
        self.send, self.receive = anyio.create_memory_object_stream[_Death](100)

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
                report = self._push(request, workdir) if self.push_first else None
                self.send.send_nowait(_Death(request.worker_id, request.id, reason, report))
                return [InitPayload(session_id="s"), Pause(600)]
            self._write(request.prompt, workdir)
            return list(default_script(request))

        return ScriptedCodeAgent(script)

    def _write(self, prompt: str, workdir: Path) -> None:
        keys = sorted(self.edits, key=len, reverse=True)  # as file_writer picks them
        chosen = next((k for k in keys if k in prompt), None)
        for path, content in (self.edits[chosen] if chosen else {}).items():
            (workdir / path).write_text(content, encoding="utf-8")

    def _push(self, request: AgentRequest, workdir: Path) -> GitReport:
        """What the worker's git step does after a turn: commit the edits, push the branch."""
        self._write(request.prompt, workdir)
        branch = f"codeyard/{request.id.split('-r', 1)[0]}"

        def git(*args: str) -> str:
            argv = ["git", "-c", "user.name=t", "-c", "user.email=t@x", *args]
            done = subprocess.run(argv, cwd=workdir, check=True, capture_output=True, text=True)
            return done.stdout.strip()

        git("add", "-A")
        git("commit", "-q", "--no-verify", "-m", "feat: pushed before the death")
        git("push", "-q", "origin", f"HEAD:refs/heads/{branch}")
        sha = git("rev-parse", "HEAD")
        self.pushed.append(sha)
        return GitReport(branch=branch, base="main", commits=(sha,), head_sha=sha, pushed=True)

    async def run(self) -> None:
        async for death in self.receive:
            died = AgentResult(
                status=ResultStatus.ERROR,
                provider="scripted",
                error=f"the worker container ended unexpectedly ({death.reason})",
                terminal_reason=death.reason,
            )
            stamp = EventSequencer(
                worker_id=death.worker_id, run_id=death.run_id if self.in_run else None
            )
            payloads: list[EventPayload] = [ResultPayload(result=died)]
            if death.report is not None:
                detail = death.report.model_dump(mode="json")
                payloads.insert(0, LifecyclePayload(state="git", detail=detail))
            for payload in payloads:
                event = stamp.stamp(payload)
                await self.setup.manager.bus.publish(
                    worker_output_stream(death.worker_id),
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


async def branch_commits(setup: Setup, branch: str | None, base: str | None) -> list[str]:
    """``git rev-list --reverse base..branch`` in the forge's repository."""
    assert branch is not None
    assert base is not None
    bare = setup.forge.repo_path("app")
    argv = ["git", "-C", str(bare), "rev-list", "--reverse", f"{base}..{branch}"]
    done = await anyio.run_process(argv)
    return done.stdout.decode().split()


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
