"""Parallel coding tasks, reviewed and merged, with plain asyncio and ``TaskRunner``.

Each task runs in its own worker (a container of a running ``codeyard serve``): the agent
works on a branch ``codeyard/<task id>`` cloned from the local forge, the worker commits
and pushes, a reviewer agent (another worker) reads the pull request and either approves
it (squash merge) or asks for changes, which go back to the same worker for another round.

    uv run python docs/examples/asyncio_tasks.py \\
        --redis-url redis://:PASSWORD@127.0.0.1:6379/0 --forge-dir /tmp/forge

Then ``git --git-dir /tmp/forge/app.git log main`` shows one squash commit per merged task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from example_support import parse_args, served_forge, show, tasks_from, worker_reviewer

from codeyard.app.tasks.review import Ask, Reviewer
from codeyard.app.tasks.run_tasks import TaskRunConfig, TaskRunner
from codeyard.client import CodeyardClient
from codeyard.domain.task_run import CodingTask, RepoTarget, TaskOutcome
from codeyard.domain.worker import WorkerSpec
from codeyard.ports.code_host import CodeHost


async def run_tasks(
    client: CodeyardClient,
    code_host: CodeHost,
    ask: Ask,
    tasks: Sequence[CodingTask],
    *,
    repo: RepoTarget,
    spec: WorkerSpec | None = None,
    git_token: str | None = None,
    concurrency: int = 4,
) -> list[TaskOutcome]:
    """Run ``tasks`` in parallel workers until each is merged, conflicting, refused after
    three rounds or failed; one outcome per task, in order. ``ask`` is the reviewer agent
    (prompt in, final text out); any :class:`CodeHost` works (the local forge, GitHub)."""
    runner = TaskRunner(
        client,
        code_host,
        Reviewer(code_host, ask),
        repo=repo,
        spec=spec,
        git_token=git_token,  # reaches the developer workers' env, nowhere else
        config=TaskRunConfig(concurrency=concurrency, max_rounds=3),
    )
    return await runner.run(tasks, on_outcome=show)


async def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv, (__doc__ or "").split("\n\n")[0])
    async with (
        served_forge(args.forge_dir, args.repo, args.agent) as forge,
        CodeyardClient.connect(args.redis_url) as client,
    ):
        reviewer_spec = WorkerSpec(agent=args.agent, instructions="You review code.")
        await run_tasks(
            client,
            forge.host,
            worker_reviewer(client, reviewer_spec),
            tasks_from(args.task),
            repo=forge.repo,
            spec=forge.spec,
            git_token=forge.token,
        )


if __name__ == "__main__":
    asyncio.run(main())
