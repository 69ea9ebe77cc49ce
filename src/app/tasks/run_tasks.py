"""run_tasks: coding tasks fanned out to parallel workers, each ending as a reviewed PR.

Per task (at most ``concurrency`` at once, each in its own worker):

1. create a worker (the manager picks the engine; the image is the spec's);
2. round 1: send the task's prompt with a git step (clone, branch ``codeyard/<task id>``
   from the base, and after the turn commit ``feat(scope): ...`` and push, rebasing first
   when the remote moved); wait for the run's result and git report;
3. open (or find) the pull request and ask the reviewer for a verdict: approve -> squash
   merge (a conflict with what other tasks merged meanwhile is reported as ``conflict``,
   never lost); request changes -> the feedback becomes a PR comment and the next round's
   prompt, on the same worker, resuming its session; after ``max_rounds`` rounds the task
   ends ``changes_requested``;
4. delete the worker, whatever happened (shielded, bounded).

A result that says the model provider throttled (429/529, overloaded, rate limit) is
retried with backoff, up to ``rate_limit_retries`` times, as the same round. A result that
says the worker's container died (the manager's ``container_killed``, ``container_oom``...)
retries the round on a NEW worker (the dead one is deleted), which continues from the
task's remote branch when one was pushed (the git step checks it out); after
``worker_failure_retries`` such retries the task ends ``failed`` with a ``dead_letter:``
error naming every death (also in ``TaskOutcome.worker_failures``). Every task ends with a
:class:`TaskOutcome`, failures included; ``cancel`` (an event) stops the unfinished ones,
whose outcomes say ``cancelled``. An outcome's ``commits`` are its pull request's as the
code host lists them (the turns' git reports when the host cannot say: a worker dying
right after its push never reports it).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import structlog

from codeyard.app.tasks.commits import pull_request_commits, pushed_commits
from codeyard.app.tasks.progress import (
    Phase,
    TaskPhase,
    TaskProgress,
    WorkerDied,
    dead_letter,
    feedback_prompt,
    throttled,
    worker_death,
)
from codeyard.app.tasks.review import DecisionKind, decide
from codeyard.client import CodeyardClient
from codeyard.client.runs import RunReport
from codeyard.domain.agent import ResultStatus
from codeyard.domain.code_host import GitStep, PullRequest, ReviewVerdict
from codeyard.domain.errors import CodeyardError
from codeyard.domain.task import RetryPolicy
from codeyard.domain.task_run import CodingTask, RepoTarget, TaskOutcome, TaskStatus
from codeyard.domain.worker import WorkerSpec
from codeyard.ports.code_host import CodeHost

# Phase, TaskPhase, throttled and feedback_prompt were defined here first: still exported.
__all__ = [
    "Phase",
    "Reviews",
    "TaskPhase",
    "TaskRunConfig",
    "TaskRunner",
    "feedback_prompt",
    "throttled",
]

log = structlog.get_logger(__name__)


class Reviews(Protocol):
    """The reviewer (:class:`codeyard.app.tasks.review.Reviewer`)."""

    async def review(self, pr: PullRequest, *, task: str) -> ReviewVerdict: ...


@dataclass(frozen=True)
class TaskRunConfig:
    concurrency: int = 4
    max_rounds: int = 3
    turn_timeout_s: float = 1800.0
    rate_limit_retries: int = 3
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(base_s=5.0, max_s=120.0))
    #: The model of every developer turn (``None``: the CLI's default).
    model: str | None = None
    #: New workers a task gets after its worker died (0: a death fails the task).
    worker_failure_retries: int = 2


class TaskRunner:
    def __init__(
        self,
        client: CodeyardClient,
        code_host: CodeHost,
        reviewer: Reviews,
        *,
        repo: RepoTarget,
        spec: WorkerSpec | None = None,
        git_token: str | None = None,
        config: TaskRunConfig | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._client = client
        self._host = code_host
        self._reviewer = reviewer
        self._repo = repo
        self._spec = spec or WorkerSpec()
        # The token goes with each turn (its input entry), never into the worker's spec:
        # specs are stored in the registry and echoed by status/list. Until the credential
        # store of issue #9 it still crosses the event bus (see ADR 0006).
        self._turn_env = (
            {repo.token_env: git_token} if git_token is not None and repo.token_env else {}
        )
        self._config = config or TaskRunConfig()
        self._sleep = sleep

    async def run(
        self,
        tasks: Sequence[CodingTask],
        *,
        cancel: anyio.Event | None = None,
        on_outcome: Callable[[TaskOutcome], None] | None = None,
        on_phase: Callable[[TaskPhase], None] | None = None,
    ) -> list[TaskOutcome]:
        """Run every task; one outcome per task, in the order given. ``on_phase`` is
        called (synchronously: keep it quick) when a task starts, codes or is reviewed."""
        outcomes: dict[str, TaskOutcome] = {}
        limiter = anyio.CapacityLimiter(self._config.concurrency)

        async def one(task: CodingTask) -> None:
            async with limiter:
                outcome = await self._run_one(task, on_phase)
            outcomes[task.id] = outcome
            if on_outcome is not None:
                on_outcome(outcome)

        async with anyio.create_task_group() as tg:
            if cancel is not None:

                async def cancel_on_request() -> None:
                    await cancel.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(cancel_on_request)
            async with anyio.create_task_group() as work:
                for task in tasks:
                    work.start_soon(one, task, name=f"task {task.id}")
            tg.cancel_scope.cancel()  # the work is done: stop the cancel watcher
        return [
            outcomes.get(t.id) or TaskOutcome(task_id=t.id, status=TaskStatus.CANCELLED)
            for t in tasks
        ]

    async def _run_one(
        self, task: CodingTask, on_phase: Callable[[TaskPhase], None] | None = None
    ) -> TaskOutcome:
        progress = TaskProgress(task, on_phase=on_phase)
        outcome = await self._on_workers(progress)
        if progress.pr is None:
            return outcome
        # The host's list has what the reports miss: the push of a worker that died before
        # its report got out.
        commits = await pull_request_commits(
            self._host, progress.pr, outcome.commits, task_id=task.id
        )
        return outcome.model_copy(update={"commits": commits})

    async def _on_workers(self, progress: TaskProgress) -> TaskOutcome:
        """The task's rounds on a worker, on a new one after each death (up to a limit)."""
        task = progress.task
        retries = self._config.worker_failure_retries
        try:
            while True:
                progress.enter(Phase.STARTING)
                # Unique per run: a worker id names one worker forever (a rerun of the task
                # must not find the ended worker of an earlier run).
                worker_id = f"w-{task.id}-{secrets.token_hex(3)}"
                created = await self._client.create(self._spec, worker_id=worker_id)
                progress.on_new_worker(created.worker_id)
                try:
                    return await self._rounds(progress)
                except WorkerDied as died:
                    progress.worker_failures.append(died.reason)
                    log.warning(
                        "task worker died",
                        task_id=task.id,
                        worker_id=progress.worker_id,
                        reason=died.reason,
                        deaths=len(progress.worker_failures),
                    )
                    await self._delete_worker(progress)
                    if len(progress.worker_failures) > retries:
                        error = dead_letter(progress.worker_failures, retries)
                        return progress.outcome(TaskStatus.FAILED, error=error)
        except CodeyardError as exc:
            log.warning("task failed", task_id=task.id, error=str(exc))
            return progress.outcome(TaskStatus.FAILED, error=str(exc))
        except TimeoutError:
            return progress.outcome(TaskStatus.FAILED, error="the agent turn timed out")
        finally:
            await self._delete_worker(progress)

    async def _delete_worker(self, progress: TaskProgress) -> None:
        """Delete the task's current worker, if any (shielded, bounded, best effort: a dead
        worker may already be gone)."""
        worker_id, progress.live_worker = progress.live_worker, None
        if worker_id is None:
            return
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(60),
            contextlib.suppress(CodeyardError),
        ):
            await self._client.delete(worker_id)

    async def _rounds(self, progress: TaskProgress) -> TaskOutcome:
        """The task's rounds from where it stands; raises :class:`WorkerDied`."""
        task = progress.task
        while True:
            progress.rounds += 1
            progress.enter(Phase.CODING)
            report = await self._turn(progress, progress.prompt())
            if (reason := worker_death(report.result)) is not None:
                progress.rounds -= 1  # not done: the next worker runs this round again
                raise WorkerDied(reason)
            if report.result.status is not ResultStatus.SUCCESS:
                error = report.result.error or report.result.terminal_reason or "agent failed"
                return progress.outcome(TaskStatus.FAILED, error=error)
            git_error = report.git.error if report.git else None
            pushed = report.git is not None and report.git.pushed and not git_error
            # Nothing to review: no push now nor ever before. A worker that died after
            # pushing leaves its replacement, finding the change on the branch already,
            # nothing new to push: its commits are in ``commits`` when its report got out,
            # else only on the branch, hence the host is asked before failing.
            if not pushed and progress.pr is None:
                if git_error:
                    return progress.outcome(TaskStatus.FAILED, error=git_error)
                if not progress.commits:
                    progress.commits += await pushed_commits(
                        self._host, self._repo.name, branch=task.branch, base=self._repo.base,
                        task_id=task.id,
                    )  # fmt: skip
                if not progress.commits:
                    return progress.outcome(TaskStatus.FAILED, error="no change pushed")
            progress.pr = await self._host.open_pull_request(
                self._repo.name,
                head=task.branch,
                base=self._repo.base,
                title=task.headline,
                body=f"{task.prompt}\n\n(codeyard task {task.id})",
            )
            progress.enter(Phase.REVIEWING)
            verdict = await self._reviewer.review(progress.pr, task=task.prompt)
            decision = await decide(self._host, progress.pr, verdict, message=task.commit_message)
            progress.pr = decision.pr
            if decision.kind is DecisionKind.MERGED:
                return progress.outcome(TaskStatus.MERGED)
            if decision.kind is DecisionKind.CONFLICT:
                return progress.outcome(
                    TaskStatus.CONFLICT,
                    error="approved, but it no longer merges into the base cleanly",
                    conflict_files=decision.conflict_files,
                )
            progress.feedback.append(decision.feedback)
            if progress.rounds >= self._config.max_rounds:
                return progress.outcome(TaskStatus.CHANGES_REQUESTED)

    async def _turn(self, progress: TaskProgress, prompt: str) -> RunReport:
        """One developer turn with its git step; throttled results are retried."""
        task, worker_id = progress.task, progress.live_worker
        assert worker_id is not None
        # The n-th replacement worker's runs say so: their ids never repeat a dead one's.
        replaced = f"-w{len(progress.worker_failures)}" if progress.worker_failures else ""
        step = GitStep(
            repo_url=self._repo.clone_url,
            base=self._repo.base,
            branch=task.branch,
            commit_message=task.commit_message,
            token_env=self._repo.token_env,
        )
        attempt = 0
        while True:
            request_id = f"{task.id}-r{progress.rounds}-a{attempt}{replaced}"
            progress.turns_on_worker += 1
            await self._client.send(
                worker_id,
                prompt,
                request_id=request_id,
                git=step,
                env=self._turn_env,
                model=self._config.model,
            )
            # Read from the start, filtering by request id: entry ids of the input and the
            # output stream are not comparable on every bus.
            report = await self._client.wait_run(
                worker_id, request_id, timeout_s=self._config.turn_timeout_s
            )
            progress.cost += report.result.cost_usd or 0.0
            if report.git is not None:
                progress.commits.extend(c for c in report.git.commits if c not in progress.commits)
            if not throttled(report.result) or attempt >= self._config.rate_limit_retries:
                return report
            attempt += 1
            delay = self._config.retry.delay(attempt).total_seconds()
            log.info("provider throttled: retrying", task_id=task.id, delay_s=delay)
            await self._sleep(delay)
