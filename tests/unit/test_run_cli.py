"""``codeyard run`` without Docker: argument errors (exit 2), the missing-key message, the
endpoint resolution, the JSON document and the progress board."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from codeyard.app.cli import app
from codeyard.app.run_cli import (
    ApproveAll,
    Endpoint,
    RunOptions,
    RunResult,
    UsageError,
    build_tasks,
    json_document,
    resolve_endpoint,
)
from codeyard.app.run_progress import Board
from codeyard.app.run_repo import fetch_refspecs
from codeyard.app.tasks.run_tasks import Phase, TaskPhase
from codeyard.domain.code_host import PullRequest, PullRequestState, ReviewDecision
from codeyard.domain.task_run import TaskOutcome, TaskStatus

runner = CliRunner()
WIDE = {"COLUMNS": "240"}
KEY_VARS = ("ANTHROPIC_", "OPENAI_", "GEMINI_", "GOOGLE_GEMINI_", "FACTORY_", "CODEX_", "CODEYARD_")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith(KEY_VARS):
            monkeypatch.delenv(key)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    identity = ["-c", "user.name=t", "-c", "user.email=t@x.invalid"]
    for args in (
        ["init", "-q", "--initial-branch", "main"],
        [*identity, "commit", "-q", "--allow-empty", "-m", "i"],
    ):
        subprocess.run(["git", "-C", str(path), *args], check=True)
    return path


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["run", *args], env=WIDE)
    return result.exit_code, result.output


def test_run_without_a_prompt_or_a_repo_is_a_usage_error(repo: Path) -> None:
    assert invoke("--repo", str(repo))[0] == 2
    assert invoke("do something")[0] == 2  # --repo is required
    code, out = invoke("--repo", str(repo), "--api-key", "k", "--concurrency", "0", "x")
    assert code == 2, out


def test_run_without_a_key_says_what_to_set(repo: Path) -> None:
    code, out = invoke("--repo", str(repo), "add a feature")
    assert code == 2
    assert "no API key for claude" in out
    assert "ANTHROPIC_API_KEY" in out
    assert "--api-key" in out
    code, out = invoke("--repo", str(repo), "--provider", "gemini", "add a feature")
    assert (code, "GEMINI_API_KEY" in out) == (2, True)
    code, out = invoke("--repo", str(repo), "--provider", "droid", "add a feature")
    assert (code, "FACTORY_API_KEY" in out) == (2, True)


def test_run_refuses_endpoint_options_with_a_service(repo: Path) -> None:
    code, out = invoke(
        "--repo", str(repo), "--service", "redis://127.0.0.1:1/0", "--base-url", "http://m", "x"
    )
    assert code == 2
    assert "cannot be applied to a running service" in out


def test_run_refuses_a_blank_prompt(repo: Path) -> None:
    code, out = invoke("--repo", str(repo), "--api-key", "k", "   ")
    assert code == 2
    assert "prompt" in out


def test_run_refuses_a_directory_that_is_not_a_repository_or_lacks_the_base(
    repo: Path, tmp_path: Path
) -> None:
    code, out = invoke("--repo", str(tmp_path / "missing"), "--api-key", "k", "x")
    assert (code, "is not a directory" in out) == (2, True), out
    plain = tmp_path / "plain"
    plain.mkdir()
    code, out = invoke("--repo", str(plain), "--api-key", "k", "x")
    assert (code, "is not a git repository" in out) == (2, True), out
    code, out = invoke("--repo", str(repo), "--api-key", "k", "--base", "develop", "x")
    assert (code, "has no branch 'develop'" in out) == (2, True), out


def test_endpoint_options_win_over_the_providers_variables() -> None:
    env = {"ANTHROPIC_API_KEY": "env-key", "ANTHROPIC_BASE_URL": "http://env"}
    from_env = resolve_endpoint("claude", base_url=None, api_key=None, service=None, env=env)
    assert from_env == Endpoint(base_url="http://env", api_key="env-key")
    given = resolve_endpoint("claude", base_url="http://opt", api_key="k", service=None, env=env)
    assert given == Endpoint(base_url="http://opt", api_key="k")
    codex = resolve_endpoint(
        "codex", base_url=None, api_key=None, service=None, env={"OPENAI_API_KEY": "o"}
    )
    assert codex == Endpoint(base_url=None, api_key="o")
    # A service decides its own endpoint: nothing is taken from this environment.
    served = resolve_endpoint("claude", base_url=None, api_key=None, service="redis://h", env=env)
    assert served == Endpoint()
    assert "env-key" not in repr(from_env)  # the key never shows in reprs


def test_unknown_provider_needs_an_explicit_key() -> None:
    with pytest.raises(UsageError, match="no API key for mine"):
        resolve_endpoint("mine", base_url=None, api_key=None, service=None, env={})


def test_tasks_are_numbered_from_t_1() -> None:
    tasks = build_tasks(["one", "two"], scope="backend")
    assert [(t.id, t.prompt, t.branch, t.scope) for t in tasks] == [
        ("t-1", "one", "codeyard/t-1", "backend"),
        ("t-2", "two", "codeyard/t-2", "backend"),
    ]
    with pytest.raises(UsageError):
        build_tasks([])
    with pytest.raises(UsageError):
        build_tasks(["ok"], scope="Not A Scope")


def _result(tmp_path: Path) -> RunResult:
    tasks = build_tasks(["write the note", "break things"])
    pr = PullRequest(
        repo="repo",
        number=1,
        head="codeyard/t-1",
        base="main",
        title="t",
        state=PullRequestState.MERGED,
    )
    outcomes = [
        TaskOutcome(
            task_id="t-1", status=TaskStatus.MERGED, branch="codeyard/t-1", commits=("abc",),
            pull_request=pr, rounds=2, cost_usd=0.25, feedback=("fix it",),
        ),
        TaskOutcome(task_id="t-2", status=TaskStatus.FAILED, branch="codeyard/t-2", error="boom"),
    ]  # fmt: skip
    branches = {"codeyard/t-1": "1" * 40, "codeyard/merged": "2" * 40}
    return RunResult(RunOptions(tasks=tuple(tasks), repo=tmp_path), outcomes, branches, tmp_path)


def test_the_json_document_has_one_entry_per_task(tmp_path: Path) -> None:
    result = _result(tmp_path)
    doc = json.loads(json.dumps(json_document(result)))  # JSON all the way down
    assert set(doc) == {"repo", "base", "tasks", "branches"}
    assert (doc["repo"], doc["base"]) == (str(tmp_path), "main")
    merged, failed = doc["tasks"]
    assert merged["task_id"] == "t-1"
    assert merged["prompt"] == "write the note"
    assert merged["status"] == "merged"
    assert (merged["rounds"], merged["cost_usd"], merged["feedback"]) == (2, 0.25, ["fix it"])
    assert merged["pull_request"]["state"] == "merged"
    assert merged["local_branch"] == "codeyard/t-1"
    assert (failed["status"], failed["error"], failed["local_branch"]) == ("failed", "boom", None)
    assert doc["branches"] == {"codeyard/merged": "2" * 40, "codeyard/t-1": "1" * 40}
    assert not result.ok


def test_results_are_fetched_forced_into_codeyards_namespace_only() -> None:
    assert fetch_refspecs(["codeyard/t-1"], "trunk") == [
        "+refs/heads/codeyard/t-1:refs/heads/codeyard/t-1",
        "+refs/heads/trunk:refs/heads/codeyard/merged",
    ]


def _text(board: Board) -> str:
    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(board.render())
    return console.export_text()


def test_the_board_shows_each_tasks_phase_then_its_outcome() -> None:
    board = Board(build_tasks(["write the note", "other"]))
    assert _text(board).count("queued") == 2
    board.on_phase(TaskPhase("t-1", Phase.STARTING, 0, None))
    board.on_phase(TaskPhase("t-1", Phase.CODING, 1, "w-1"))
    text = _text(board)
    assert "coding" in text
    assert "queued" in text  # t-2 has not started
    board.on_outcome(TaskOutcome(task_id="t-1", status=TaskStatus.FAILED, rounds=1, error="boom"))
    line = next(line for line in _text(board).splitlines() if "t-1" in line)
    assert "failed" in line
    assert "boom" in line


@pytest.mark.anyio
async def test_no_review_approves_whatever_was_pushed() -> None:
    pr = PullRequest(repo="repo", number=3, head="codeyard/t-1", base="main", title="t")
    verdict = await ApproveAll().review(pr, task="anything")
    assert verdict.decision is ReviewDecision.APPROVE
