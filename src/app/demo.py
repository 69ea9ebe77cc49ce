"""``codeyard demo``: three parallel tasks on a sample repository, end to end, offline.

A tiny app is committed to a new git repository (a temp dir, or ``--dir``), and the
``codeyard run`` machinery takes three tasks on it: each in its own worker container with
the real agent CLI, pushing to a private forge, reviewed by a reviewer worker and
squash-merged; the results come back as ``codeyard/*`` branches of the sample repository,
which is kept for you to look at.

Without the provider's API key, the workers talk to the built-in scripted model server: the
developers write ``app/<task>.txt``, the reviewer approves two changes and asks for changes
on the third (its first version carries a TODO), which comes back fixed in round two. With
a key, the same tasks run on the real model.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
from rich.console import Console

from codeyard.app.run_cli import (
    PROVIDER_ENV,
    Endpoint,
    RunOptions,
    RunResult,
    UsageError,
    execute,
    resolve_endpoint,
    show_run,
)
from codeyard.app.run_progress import Board
from codeyard.app.settings import Settings
from codeyard.domain.errors import ServiceUnavailable
from codeyard.domain.task_run import CodingTask, TaskOutcome

APPROVE = '{"decision": "approve", "feedback": "Looks good."}'
REJECT = '{"decision": "request_changes", "feedback": "Remove the TODO marker."}'
#: The key the scripted model accepts (it checks none; the CLIs want one).
OFFLINE_KEY = "sk-codeyard-demo-offline"
SAMPLE_FILES = {
    "README.md": "# greeter\n\nA tiny sample app for the codeyard demo.\n",
    "app/__init__.py": "",
    "app/main.py": (
        'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n\n\n'
        'if __name__ == "__main__":\n    print(greet("world"))\n'
    ),
}


@dataclass(frozen=True)
class DemoTask:
    name: str
    #: What the real model is asked.
    prompt: str
    #: What the scripted developer writes, per round (the first may be sent back).
    rounds: tuple[str, ...]


DEMO_TASKS = (
    DemoTask(
        "frontend",
        "Create app/frontend.txt: one line describing a web page that calls greet().",
        ("frontend v1\n",),
    ),
    DemoTask(
        "backend",
        "Create app/backend.txt: one line describing an HTTP endpoint serving greet().",
        ("backend v1\nTODO\n", "backend v2\n"),
    ),
    DemoTask(
        "docs", "Create app/docs.txt: one line of usage documentation for greet().", ("docs v1\n",)
    ),
)


def demo_tasks(*, scripted: bool) -> list[CodingTask]:
    """The three tasks; scripted ones carry the marker routing them on the model server."""
    return [
        CodingTask(
            id=f"t-{t.name}",
            prompt=f"[task:{t.name}] {t.prompt}" if scripted else t.prompt,
            scope=t.name,
        )
        for t in DEMO_TASKS
    ]


def scripted_model(provider: str) -> object:
    """The model server's script (a ``Router``; see the module docstring)."""
    from codeyard.testing.model_server import Router, Scenario, Text  # noqa: PLC0415
    from codeyard.testing.model_server.tools import write_file  # noqa: PLC0415

    routes: dict[str, Scenario] = {}
    for task in DEMO_TASKS:
        turns: list[list[object]] = []
        for number, content in enumerate(task.rounds, start=1):
            path = f"/workspace/app/{task.name}.txt"
            turns.append([Text(f"Round {number}."), write_file(provider, path, content)])
            turns.append([Text(f"Done with {task.name}, round {number}.")])
        routes[f"[task:{task.name}]"] = Scenario(turns=turns)  # type: ignore[arg-type]
    routes["[review:approve]"] = Scenario.text(f"Verdict:\n{APPROVE}")
    routes["[review:reject]"] = Scenario.text(f"Verdict:\n{REJECT}")
    return Router(routes)


def scripted_review(prompt: str) -> str:
    """The scripted reviewer judges by what the diff shows: a TODO is sent back."""
    marker = "[review:reject]" if "TODO" in prompt else "[review:approve]"
    return f"{marker}\n{prompt}"


async def create_sample_repo(path: Path) -> Path:
    """A git repository at ``path`` (created; must be empty) with the sample app on
    ``main``."""

    def write() -> None:
        path.mkdir(parents=True, exist_ok=True)
        if any(path.iterdir()):
            raise UsageError(f"{path} is not empty", path=str(path))
        for name, text in SAMPLE_FILES.items():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            (path / name).write_text(text, encoding="utf-8")

    await anyio.to_thread.run_sync(write)
    identity = ["-c", "user.name=codeyard demo", "-c", "user.email=demo@codeyard.invalid"]
    for args in (
        ["init", "--quiet", "--initial-branch", "main"],
        ["add", "--all"],
        [*identity, "commit", "--quiet", "-m", "Sample app"],
    ):
        await anyio.run_process(["git", *args], cwd=path)
    return path


async def require_docker(timeout_s: float = 10.0) -> None:
    """ServiceUnavailable unless a Docker engine answers (the workers are containers)."""
    from codeyard.adapters.docker.client import open_docker_client  # noqa: PLC0415

    try:
        with anyio.fail_after(timeout_s):
            client = await anyio.to_thread.run_sync(
                lambda: open_docker_client(max_pool_size=2, timeout_s=5), abandon_on_cancel=True
            )
        client.close()
    except Exception as exc:  # any failure means no usable engine
        raise ServiceUnavailable(
            "codeyard demo needs a Docker engine (is Docker running? DOCKER_HOST?)",
            service="docker",
            error=f"{type(exc).__name__}: {exc}",
        ) from exc


def choose_endpoint(provider: str, env: Mapping[str, str]) -> Endpoint | None:
    """The real model's endpoint when the provider's key is set, else None (scripted)."""
    try:
        return resolve_endpoint(provider, base_url=None, api_key=None, service=None, env=env)
    except UsageError:
        return None


@asynccontextmanager
async def model_endpoint(provider: str, real: Endpoint | None) -> AsyncIterator[Endpoint]:
    """``real``, or the scripted model server's endpoint while the block runs."""
    if real is not None:
        yield real
        return
    from codeyard.testing.model_server import ModelServer  # noqa: PLC0415

    # All interfaces: worker containers reach it through the host gateway.
    async with ModelServer(scripted_model(provider), host="0.0.0.0") as server:  # type: ignore[arg-type]
        port = server.base_url.rsplit(":", 1)[1]
        yield Endpoint(base_url=f"http://127.0.0.1:{port}", api_key=OFFLINE_KEY)


def sample_dir(directory: Path | None) -> Path:
    if directory is not None:
        return directory.expanduser().absolute()
    return Path(tempfile.mkdtemp(prefix="codeyard-demo-")) / "greeter"


def demo_options(
    repo: Path, provider: str, endpoint: Endpoint, tasks: list[CodingTask]
) -> RunOptions:
    return RunOptions(
        tasks=tuple(tasks),
        repo=repo,
        provider=provider,
        endpoint=endpoint,
        concurrency=len(tasks),
        rounds=3,
        turn_timeout_s=600.0,
        instructions="You are a careful developer. Keep changes minimal.",
    )


async def run_demo(
    settings: Settings,
    *,
    provider: str,
    repo: Path,
    real: Endpoint | None,
    tasks: list[CodingTask],
    board: Board,
    on_outcome: Callable[[TaskOutcome], None],
) -> RunResult:
    """Check Docker, create the sample repository, run the tasks (see the module doc)."""
    await require_docker()
    await create_sample_repo(repo)
    async with model_endpoint(provider, real) as endpoint:
        return await execute(
            demo_options(repo, provider, endpoint, tasks),
            settings,
            board=board,
            on_outcome=on_outcome,
            review_prefix=None if real is not None else scripted_review,
        )


def demo_command(settings: Settings, *, provider: str, directory: Path | None) -> RunResult:
    """``codeyard demo``: the intro line, live progress, the summary; returns the result."""
    real = choose_endpoint(provider, os.environ)
    tasks = demo_tasks(scripted=real is None)
    repo = sample_dir(directory)
    keys = " or ".join(PROVIDER_ENV.get(provider, (("the provider's key",), None))[0])
    model = (
        "the real model"
        if real is not None
        else f"the built-in scripted model (offline; set {keys} for the real one)"
    )
    Console().print(
        f"codeyard demo: {len(tasks)} parallel tasks, the real {provider} CLI in Docker "
        f"workers, {model}.\nsample repository: {repo}",
        highlight=False,
        soft_wrap=True,
    )

    async def body(board: Board, on_outcome: Callable[[TaskOutcome], None]) -> RunResult:
        return await run_demo(
            settings, provider=provider, repo=repo, real=real, tasks=tasks, board=board,
            on_outcome=on_outcome,
        )  # fmt: skip

    result = show_run(tasks, body, settings, as_json=False, title="codeyard demo")
    Console().print(f"sample repository kept at {repo}", highlight=False, soft_wrap=True)
    return result
