"""Parallel coding tasks as a LangGraph graph: a ``developer`` node fanned out once per task
(``Send``), a ``reviewer`` node that merges what it approves and sends the rest back.

::

    START --Send per task--> developer --> reviewer --Send per rejected PR--> developer
                                               \\--(nothing sent back)--> END

A developer turn is one prompt on the task's own worker, with the worker's git step
(clone, branch ``codeyard/<task id>``, commit, push); later rounds reuse that worker, so
the agent resumes its session. The reviewer opens (or finds) each pull request, asks the
reviewer agent for a verdict (:class:`Reviewer`) and applies it (:func:`decide`: squash
merge, or the feedback as a PR comment and the next round's prompt). ``TaskRunner`` does
the same in one call and adds throttling retries and cancellation (``asyncio_tasks.py``);
this graph shows where an orchestrator would plug its own steps in.

    uv run --group examples python docs/examples/langgraph_tasks.py \\
        --redis-url redis://:PASSWORD@127.0.0.1:6379/0 --forge-dir /tmp/forge
"""

from __future__ import annotations

import asyncio
import contextlib
import operator
import secrets
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, TypedDict

import anyio
from example_support import parse_args, served_forge, show, tasks_from, worker_reviewer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Overwrite, Send

from codeyard.app.tasks.review import Ask, DecisionKind, Reviewer, decide
from codeyard.app.tasks.run_tasks import feedback_prompt
from codeyard.client import CodeyardClient
from codeyard.client.runs import RunReport
from codeyard.domain.agent import ResultStatus
from codeyard.domain.code_host import GitStep, PullRequest
from codeyard.domain.errors import CodeyardError
from codeyard.domain.task_run import CodingTask, RepoTarget, TaskOutcome, TaskStatus
from codeyard.domain.worker import WorkerSpec
from codeyard.ports.code_host import CodeHost


@dataclass(frozen=True)
class Job:
    """One task between rounds: what the next (or last) developer turn is about."""

    task: CodingTask
    prompt: str
    round: int = 1
    worker_id: str | None = None
    pr: PullRequest | None = None
    commits: tuple[str, ...] = ()
    feedback: tuple[str, ...] = ()
    cost: float = 0.0
    #: The last turn's report, or why it has none.
    report: RunReport | None = None
    error: str | None = None

    def outcome(self, status: TaskStatus, **extra: Any) -> TaskOutcome:
        return TaskOutcome(
            task_id=self.task.id,
            status=status,
            worker_id=self.worker_id,
            branch=self.task.branch,
            commits=self.commits,
            pull_request=self.pr,
            rounds=self.round,
            cost_usd=self.cost,
            feedback=self.feedback,
            **extra,
        )


class State(TypedDict):
    tasks: list[CodingTask]
    #: The developer turns of the current round: every parallel ``developer`` adds its own.
    done: Annotated[list[Job], operator.add]
    #: Sent back by the reviewer for another round.
    again: list[Job]
    outcomes: Annotated[list[TaskOutcome], operator.add]


@dataclass(frozen=True)
class Turn:
    """What ``Send`` hands one ``developer``."""

    job: Job


class Nodes:
    """The graph's nodes and routes, sharing the services they call. ``workers`` holds
    the workers created and not yet deleted (deleted when their task ends; ``run_tasks``
    deletes the rest when the graph fails)."""

    def __init__(
        self,
        client: CodeyardClient,
        code_host: CodeHost,
        ask: Ask,
        *,
        repo: RepoTarget,
        spec: WorkerSpec,
        max_rounds: int = 3,
        turn_timeout_s: float = 1800.0,
    ) -> None:
        self.client, self.host, self.repo, self.spec = client, code_host, repo, spec
        self.reviewer = Reviewer(code_host, ask)
        self.max_rounds, self.turn_timeout_s = max_rounds, turn_timeout_s
        self.workers: set[str] = set()

    def graph(self) -> CompiledStateGraph[State, None, State, State]:
        graph = StateGraph(State)
        graph.add_node("developer", self.developer, input_schema=Turn)
        graph.add_node("reviewer", self.review)
        graph.add_conditional_edges(START, self.fan_out, ["developer"])
        graph.add_edge("developer", "reviewer")
        graph.add_conditional_edges("reviewer", self.send_back, ["developer", END])
        return graph.compile()

    def fan_out(self, state: State) -> list[Hashable | Send]:
        return [Send("developer", Turn(job=Job(task=t, prompt=t.prompt))) for t in state["tasks"]]

    def send_back(self, state: State) -> list[Hashable | Send]:
        return [Send("developer", Turn(job=j)) for j in state["again"]] or [END]

    async def developer(self, state: Turn) -> dict[str, Any]:
        """One turn of one task on its worker (created in round 1)."""
        job = state.job
        # A fresh id per run: a worker id names one worker forever, and a rerun of the
        # task must not find the ended worker of an earlier run.
        worker_id = job.worker_id or f"w-{job.task.id}-{secrets.token_hex(3)}"
        step = GitStep(
            repo_url=self.repo.clone_url,
            base=self.repo.base,
            branch=job.task.branch,
            commit_message=job.task.commit_message,
            token_env=self.repo.token_env,
        )
        try:
            if job.worker_id is None:
                self.workers.add(worker_id)  # before the create: a timed-out one may exist
                await self.client.create(self.spec, worker_id=worker_id)
            request_id = f"{job.task.id}-r{job.round}"
            await self.client.send(worker_id, job.prompt, request_id=request_id, git=step)
            report = await self.client.wait_run(
                worker_id, request_id, timeout_s=self.turn_timeout_s
            )
        except (CodeyardError, TimeoutError) as exc:
            failed = replace(job, worker_id=worker_id, error=str(exc) or "turn timed out")
            return {"done": [failed]}
        new = () if report.git is None else report.git.commits
        cost = job.cost + (report.result.cost_usd or 0.0)
        ran = replace(job, worker_id=worker_id, report=report, commits=job.commits + new, cost=cost)
        return {"done": [ran]}

    async def review(self, state: State) -> dict[str, Any]:
        """Every turn of the round: ended tasks become outcomes, the rest go again."""
        # Reviews run in parallel; the code host serializes the merges into the base.
        async with asyncio.TaskGroup() as tg:
            reviews = [tg.create_task(self.review_one(job)) for job in state["done"]]
        ended = [r.result() for r in reviews]
        return {
            "done": Overwrite([]),  # this round is handled
            "again": [j for j in ended if isinstance(j, Job)],
            "outcomes": [o for o in ended if isinstance(o, TaskOutcome)],
        }

    async def review_one(self, job: Job) -> TaskOutcome | Job:
        report = job.report
        if report is None:  # the turn itself failed (create, bus, timeout)
            return await self.finish(job, TaskStatus.FAILED, error=job.error)
        if report.result.status is not ResultStatus.SUCCESS:
            why = report.result.error or report.result.terminal_reason or "agent failed"
            return await self.finish(job, TaskStatus.FAILED, error=why)
        if (report.git is None or not report.git.pushed) and job.pr is None:
            why = (report.git.error if report.git else None) or "no change pushed"
            return await self.finish(job, TaskStatus.FAILED, error=why)
        try:
            pr = await self.host.open_pull_request(
                self.repo.name,
                head=job.task.branch,
                base=self.repo.base,
                title=job.task.headline,
                body=job.task.prompt,
            )
            verdict = await self.reviewer.review(pr, task=job.task.prompt)
            decision = await decide(self.host, pr, verdict, message=job.task.commit_message)
        except CodeyardError as exc:  # an unreadable verdict, a code host outage
            return await self.finish(job, TaskStatus.FAILED, error=str(exc))
        job = replace(job, pr=decision.pr)
        if decision.kind is DecisionKind.MERGED:
            return await self.finish(job, TaskStatus.MERGED)
        if decision.kind is DecisionKind.CONFLICT:
            files = decision.conflict_files
            return await self.finish(job, TaskStatus.CONFLICT, conflict_files=files)
        job = replace(job, feedback=(*job.feedback, decision.feedback))
        if job.round >= self.max_rounds:
            return await self.finish(job, TaskStatus.CHANGES_REQUESTED)
        prompt = feedback_prompt(job.task, decision.feedback)
        return replace(job, round=job.round + 1, prompt=prompt, report=None)

    async def finish(self, job: Job, status: TaskStatus, **extra: Any) -> TaskOutcome:
        """The task's outcome, its worker deleted (shielded, bounded)."""
        if job.worker_id in self.workers:
            self.workers.discard(job.worker_id)
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(60),
                contextlib.suppress(CodeyardError),
            ):
                await self.client.delete(job.worker_id)
        return job.outcome(status, **extra)


async def run_tasks(
    client: CodeyardClient,
    code_host: CodeHost,
    ask: Ask,
    tasks: Sequence[CodingTask],
    *,
    repo: RepoTarget,
    spec: WorkerSpec | None = None,
    git_token: str | None = None,
    max_rounds: int = 3,
) -> list[TaskOutcome]:
    """Run the graph over ``tasks``: one outcome per task, in order (same contract as
    ``asyncio_tasks.run_tasks``)."""
    spec = spec or WorkerSpec()
    if git_token is not None and repo.token_env:
        spec = spec.model_copy(update={"env": {**spec.env, repo.token_env: git_token}})
    nodes = Nodes(client, code_host, ask, repo=repo, spec=spec, max_rounds=max_rounds)
    initial: State = {"tasks": list(tasks), "done": [], "again": [], "outcomes": []}
    try:
        final = await nodes.graph().ainvoke(initial)
    finally:  # a failed or cancelled graph leaves workers behind: delete them
        with anyio.CancelScope(shield=True), anyio.move_on_after(60):
            for worker_id in sorted(nodes.workers):
                with contextlib.suppress(CodeyardError):
                    await client.delete(worker_id)
    by_id = {o.task_id: o for o in final["outcomes"]}
    for outcome in by_id.values():
        show(outcome)
    return [by_id[t.id] for t in tasks]


async def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv, (__doc__ or "").split("\n\n")[0])
    async with (
        served_forge(args.forge_dir, args.repo, args.agent) as forge,
        CodeyardClient.connect(args.redis_url) as client,
    ):
        await run_tasks(
            client,
            forge.host,
            worker_reviewer(client, WorkerSpec(agent=args.agent, instructions="You review.")),
            tasks_from(args.task),
            repo=forge.repo,
            spec=forge.spec,
            git_token=forge.token,
        )


if __name__ == "__main__":
    asyncio.run(main())
