"""``codeyard run``: prompts become parallel coding tasks on a local repository.

The repository goes in through a private forge (:mod:`codeyard.app.run_repo`), each task
runs in its own worker (the embedded service by default, a running ``codeyard serve``
with ``--service``), is reviewed (a reviewer worker, or approve-all with ``--no-review``)
and squash-merged on the forge; the results come back as ``codeyard/<task id>`` branches
and ``codeyard/merged``. Live progress on a terminal, one JSON document with ``--json``.
The same machinery runs ``codeyard demo``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.live import Live

from codeyard.app.run_progress import Board, summary_table, where_lines
from codeyard.app.settings import InvalidSettings, Settings
from codeyard.domain.code_host import PullRequest, ReviewDecision, ReviewVerdict
from codeyard.domain.errors import CodeyardError, InvalidInput
from codeyard.domain.task_run import CodingTask, TaskOutcome, TaskStatus

#: Per provider: the API key variables read (first set wins) and the base-URL variable.
PROVIDER_ENV: dict[str, tuple[tuple[str, ...], str | None]] = {
    "claude": (("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"), "ANTHROPIC_BASE_URL"),
    "codex": (("OPENAI_API_KEY", "CODEX_API_KEY"), "OPENAI_BASE_URL"),
    "opencode": (("OPENAI_API_KEY",), "OPENAI_BASE_URL"),
    "gemini": (("GEMINI_API_KEY",), "GOOGLE_GEMINI_BASE_URL"),
    "droid": (("FACTORY_API_KEY",), None),
}
#: Replies to creates wait this long: a worker image's first build takes minutes.
CREATE_REPLY_TIMEOUT_S = 900.0
JSON_SHAPE = (
    '--json prints ONE JSON document: {"repo": PATH, "base": BRANCH, "tasks": [{"task_id", '
    '"prompt", "status" (merged | changes_requested | conflict | failed | cancelled), '
    '"branch", "commits", "pull_request", "rounds", "cost_usd", "feedback", "error", '
    '"conflict_files", "worker_failures", "worker_id", "local_branch"}], '
    '"branches": {"codeyard/...": SHA}}.'
)


class UsageError(InvalidInput):
    """The command line cannot be run as given (exit code 2)."""

    code = "run_usage_error"


@dataclass(frozen=True)
class Endpoint:
    """The model endpoint the workers' agent CLIs use (``None``: the service decides)."""

    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)


def resolve_endpoint(
    provider: str,
    *,
    base_url: str | None,
    api_key: str | None,
    service: str | None,
    env: Mapping[str, str],
) -> Endpoint:
    """The endpoint from the options, else the provider's usual variables; UsageError
    when no key is found, or when a service (whose settings decide) is given one."""
    if service is not None:
        if base_url or api_key:
            raise UsageError(
                "--base-url/--api-key cannot be applied to a running service: its own "
                "CODEYARD_MANAGER__AGENT_BASE_URL / CODEYARD_MANAGER__AGENT_API_KEY decide"
            )
        return Endpoint()
    keys, url_var = PROVIDER_ENV.get(provider, ((), None))
    key = api_key or next((env[k] for k in keys if env.get(k)), None)
    if not key:
        where = " or ".join(keys) if keys else "the provider's key variable"
        raise UsageError(
            f"no API key for {provider}: set {where}, or pass --api-key "
            "(with --base-url for a gateway, a proxy or a local model server)",
            provider=provider,
        )
    url = base_url or (env.get(url_var) if url_var else None) or None
    return Endpoint(base_url=url, api_key=key)


def build_tasks(prompts: Sequence[str], *, scope: str | None = None) -> list[CodingTask]:
    """One task per prompt, ids ``t-1``, ``t-2``... (UsageError for a blank prompt)."""
    if not prompts:
        raise UsageError("give at least one prompt")
    try:
        return [CodingTask(id=f"t-{n}", prompt=p, scope=scope) for n, p in enumerate(prompts, 1)]
    except CodeyardError as exc:
        raise UsageError(exc.message, **exc.fields) from exc


@dataclass(frozen=True)
class RunOptions:
    tasks: tuple[CodingTask, ...]
    repo: Path
    provider: str = "claude"
    endpoint: Endpoint = field(default_factory=Endpoint)
    model: str | None = None
    concurrency: int = 4
    rounds: int = 3
    review: bool = True
    service: str | None = None
    base: str = "main"
    turn_timeout_s: float = 1800.0
    instructions: str | None = None


@dataclass(frozen=True)
class RunResult:
    options: RunOptions
    outcomes: list[TaskOutcome]
    #: ``{branch in the user's repository: commit}`` (task branches and codeyard/merged).
    branches: dict[str, str]
    repo: Path

    @property
    def ok(self) -> bool:
        return all(o.status is TaskStatus.MERGED for o in self.outcomes)


def json_document(result: RunResult) -> dict[str, Any]:
    """The ``--json`` document (shape in :data:`JSON_SHAPE`)."""
    prompts = {t.id: t.prompt for t in result.options.tasks}
    tasks = []
    for outcome in result.outcomes:
        item = outcome.model_dump(mode="json")
        item["prompt"] = prompts.get(outcome.task_id, "")
        branch = outcome.branch
        item["local_branch"] = branch if branch in result.branches else None
        tasks.append(item)
    return {
        "repo": str(result.repo),
        "base": result.options.base,
        "tasks": tasks,
        "branches": dict(sorted(result.branches.items())),
    }


class ApproveAll:
    """``--no-review``: every pushed change is approved (merged as soon as pushed)."""

    async def review(self, pr: PullRequest, *, task: str) -> ReviewVerdict:
        return ReviewVerdict(decision=ReviewDecision.APPROVE, feedback="not reviewed")


#: Turns a review prompt into what the reviewer worker is sent (the demo adds markers).
ReviewPrefix = Callable[[str], str]


@asynccontextmanager
async def open_client(options: RunOptions, settings: Settings) -> AsyncIterator[Any]:
    """A client of the service the run uses: ``--service URL``, else the embedded one."""
    from codeyard.app.embedded import open_embedded  # noqa: PLC0415 - docker, redis
    from codeyard.client import CodeyardClient  # noqa: PLC0415

    if options.service is not None:
        url = options.service
        async with CodeyardClient.connect(url, reply_timeout_s=CREATE_REPLY_TIMEOUT_S) as c:
            yield c
        return
    endpoint = options.endpoint
    async with open_embedded(
        settings, agent_base_url=endpoint.base_url, agent_api_key=endpoint.api_key
    ) as service:
        # Its own client on the same bus: a create may wait for an image build.
        yield CodeyardClient(service.manager.app.event_bus, reply_timeout_s=CREATE_REPLY_TIMEOUT_S)


async def execute(
    options: RunOptions,
    settings: Settings,
    *,
    board: Board | None = None,
    review_prefix: ReviewPrefix | None = None,
    on_outcome: Callable[[TaskOutcome], None] | None = None,
) -> RunResult:
    """Run ``options`` end to end (see the module docstring)."""
    from codeyard.app.run_repo import fetch_results, serve_repository  # noqa: PLC0415
    from codeyard.app.tasks.review import Reviewer  # noqa: PLC0415
    from codeyard.app.tasks.run_tasks import Reviews, TaskRunConfig, TaskRunner  # noqa: PLC0415
    from codeyard.domain.worker import NetworkPolicy, WorkerSpec  # noqa: PLC0415

    def outcome_hook(outcome: TaskOutcome) -> None:
        if board is not None:
            board.on_outcome(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    async with serve_repository(options.repo, options.base) as served:
        spec = WorkerSpec(
            agent=options.provider,
            instructions=options.instructions,
            network=NetworkPolicy.ALLOWLIST,
            allowed_hosts=(str(served.port),),
        )
        async with open_client(options, settings) as client:

            async def ask(prompt: str) -> str:
                text = review_prefix(prompt) if review_prefix else prompt
                result = await client.run(spec, text, timeout_s=options.turn_timeout_s)
                return str(result.text)

            reviewer: Reviews = Reviewer(served.forge, ask) if options.review else ApproveAll()
            config = TaskRunConfig(
                concurrency=options.concurrency,
                max_rounds=options.rounds,
                turn_timeout_s=options.turn_timeout_s,
                model=options.model,
            )
            runner = TaskRunner(
                client, served.forge, reviewer, repo=served.target, spec=spec,
                git_token=served.token, config=config,
            )  # fmt: skip
            async with anyio.create_task_group() as followers:
                if board is not None:
                    board.follow_with(client, followers)
                outcomes = await runner.run(
                    list(options.tasks),
                    on_outcome=outcome_hook,
                    on_phase=board.on_phase if board is not None else None,
                )
                followers.cancel_scope.cancel()
        branches = await fetch_results(served)
    return RunResult(options, outcomes, branches, served.path)


#: What a displayed run does: given the board and an outcome hook, run and return.
RunBody = Callable[[Board, Callable[[TaskOutcome], None]], Awaitable[RunResult]]


def show_run(
    tasks: Sequence[CodingTask],
    body: RunBody,
    settings: Settings,
    *,
    as_json: bool,
    title: str = "codeyard run",
) -> RunResult:
    """Run ``body`` with live progress (a TTY, not JSON) or plain progress lines, then the
    summary (or the JSON document). Usage and repository errors exit 2, other failures 1."""
    from codeyard.app.observability.logging import configure_logging  # noqa: PLC0415
    from codeyard.app.run_repo import RepositoryError  # noqa: PLC0415

    configure_logging("WARNING", json=settings.log_json)  # logs on stderr, quiet
    out, err = Console(), Console(stderr=True)
    board = Board(list(tasks), title=f"{title}: {len(tasks)} task(s)")
    live = sys.stdout.isatty() and not as_json

    def plain(outcome: TaskOutcome) -> None:
        if not live and not as_json:
            out.print(f"{outcome.task_id}: {outcome.status.value} ({outcome.rounds} round(s))")

    display = (
        Live(console=out, get_renderable=board.render, refresh_per_second=4)
        if live
        else nullcontext()
    )
    try:
        with display:
            result = anyio.run(body, board, plain)
    except (UsageError, RepositoryError) as exc:
        err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        raise typer.Exit(2) from exc
    except CodeyardError as exc:
        err.print(f"[bold red]{title} failed:[/] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps(json_document(result), indent=2))
    else:
        out.print(summary_table(result, f"{title}: results"))
        for line in where_lines(result):
            out.print(line, highlight=False, soft_wrap=True)
    return result


def load_settings() -> Settings:
    try:
        return Settings()
    except InvalidSettings as exc:
        Console(stderr=True).print(f"[bold red]invalid configuration:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc


def register(app: typer.Typer) -> None:
    """Add the ``run`` command to ``app``."""
    app.command(name="run", help=_HELP, epilog=JSON_SHAPE)(run)


_HELP = """Run PROMPTs as parallel coding tasks on the repository --repo, each in its own
worker; each ends reviewed and squash-merged (exit 0 when all merged, 1 otherwise, 2 for
usage errors). The results come back as branches codeyard/<task id> and codeyard/merged;
the repository's working tree and current branch are never touched."""


def run(  # typer: one parameter per option
    prompts: Annotated[list[str], typer.Argument(help="One task per prompt.", metavar="PROMPT")],
    *,
    repo: Annotated[Path, typer.Option("--repo", help="The local git repository.")],
    provider: Annotated[
        str, typer.Option(help="Agent CLI: claude, codex, gemini, droid, opencode.")
    ] = "claude",
    base_url: Annotated[
        str | None,
        typer.Option(help="Model API base URL (default: the provider's usual variable)."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="Model API key (default: the provider's usual variable).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="The model of the developer turns.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Tasks run at once.")] = 4,
    rounds: Annotated[int, typer.Option(min=1, help="Review rounds per task at most.")] = 3,
    review: Annotated[
        bool, typer.Option("--review/--no-review", help="Review by an agent, or merge as pushed.")
    ] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document (see below).")
    ] = False,
    service: Annotated[
        str | None,
        typer.Option(help="Redis URL of a running `codeyard serve` (default: embedded)."),
    ] = None,
    base: Annotated[
        str, typer.Option(help="The branch the tasks start from and merge into.")
    ] = "main",
    scope: Annotated[
        str | None, typer.Option(help="Conventional-commit scope of every task.")
    ] = None,
) -> None:
    err = Console(stderr=True)
    try:
        endpoint = resolve_endpoint(
            provider, base_url=base_url, api_key=api_key, service=service, env=os.environ
        )
        tasks = build_tasks(prompts, scope=scope)
    except UsageError as exc:
        err.print(f"[bold red]error:[/] {exc.message}", highlight=False)
        raise typer.Exit(2) from exc
    options = RunOptions(
        tasks=tuple(tasks), repo=repo, provider=provider, endpoint=endpoint, model=model,
        concurrency=concurrency, rounds=rounds, review=review, service=service, base=base,
    )  # fmt: skip
    settings = load_settings()

    async def body(board: Board, on_outcome: Callable[[TaskOutcome], None]) -> RunResult:
        return await execute(options, settings, board=board, on_outcome=on_outcome)

    result = show_run(options.tasks, body, settings, as_json=as_json)
    if not result.ok:
        raise typer.Exit(1)
