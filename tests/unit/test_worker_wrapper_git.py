"""WorkerWrapper with a prompt's ``git`` step: a scripted agent that writes a file, the
in-memory bus, real git against a local bare repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeyard.adapters.memory.code_agent import ScriptedCodeAgent, ScriptItem, default_script
from codeyard.domain.agent import AgentRequest, ResultStatus
from codeyard.domain.code_host import GitReport
from codeyard.domain.events import AgentEvent, LifecyclePayload, ResultPayload
from tests.unit.test_worker_git import Remote, git
from tests.unit.test_worker_wrapper import results, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path)


def writing_agent(name: str = "feature.txt") -> ScriptedCodeAgent:
    """An agent whose turn writes ``name`` into the workdir, then succeeds."""

    def script(request: AgentRequest) -> list[ScriptItem]:
        assert request.workdir is not None
        (Path(request.workdir) / name).write_text(f"{request.prompt}\n")
        return list(default_script(request, provider="claude"))

    return ScriptedCodeAgent(script, provider="claude")


def prompt(remote: Remote, request_id: str, **git_changes: object) -> dict[str, object]:
    step = {"repo_url": remote.url, "branch": "task/t1", "commit_message": "feat: x"}
    return {"prompt": "add a feature", "request_id": request_id, "git": step | git_changes}


def run_of(events: list[AgentEvent], request_id: str) -> list[AgentEvent]:
    return [e for e in events if e.run_id == request_id]


def git_report(event: AgentEvent) -> GitReport:
    assert isinstance(event.payload, LifecyclePayload)
    assert event.payload.state == "git"
    return GitReport.model_validate(event.payload.detail)


def final_result(event: AgentEvent) -> ResultPayload:
    assert isinstance(event.payload, ResultPayload)
    return event.payload


async def test_the_turn_commits_pushes_and_reports_before_its_result(
    tmp_path: Path, remote: Remote
) -> None:
    async with running(tmp_path, writing_agent(), provider="claude", instructions="Be brief.") as h:
        await h.send(prompt(remote, "r1"))
        events = await h.wait_for(lambda ev: len(results(ev)) == 1)
    run = run_of(events, "r1")
    assert [e.seq for e in run] == list(range(len(run)))
    assert [e.payload.type for e in run[-2:]] == ["lifecycle", "result"]
    report = git_report(run[-2])
    head = remote.sha("refs/heads/task/t1")
    assert report.pushed
    assert report.commits == (head,)
    assert sorted(remote.files(head)) == ["README.md", "feature.txt"]
    assert remote.show(head, "feature.txt") == "add a feature"
    result = final_result(run[-1]).result
    assert result.status is ResultStatus.SUCCESS
    assert result.text == "Done: add a feature"
    assert len({e.id for e in run}) == len(run)


async def test_a_failed_push_turns_the_result_into_a_git_failed_error(
    tmp_path: Path, remote: Remote
) -> None:
    # A pre-receive hook refuses every push: the agent succeeded, the git step did not.
    hook = remote.path / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n")
    hook.chmod(0o755)
    async with running(tmp_path, writing_agent(), provider="claude") as h:
        await h.send(prompt(remote, "r1"))
        events = await h.wait_for(lambda ev: len(results(ev)) == 1)
    run = run_of(events, "r1")
    assert [e.seq for e in run] == list(range(len(run)))
    report = git_report(run[-2])
    assert not report.pushed
    assert report.error is not None
    assert "protected branch" in report.error
    result = final_result(run[-1]).result
    assert result.status is ResultStatus.ERROR
    assert result.terminal_reason == "git_failed"
    assert result.text == "Done: add a feature"  # the agent's answer is kept
    assert not remote.has("refs/heads/task/t1")


async def test_a_failed_agent_turn_commits_nothing(tmp_path: Path, remote: Remote) -> None:
    agent = ScriptedCodeAgent([], provider="claude")  # no result: a synthesized error
    async with running(tmp_path, agent, provider="claude") as h:
        await h.send(prompt(remote, "r1"))
        events = await h.wait_for(lambda ev: len(results(ev)) == 1)
    run = run_of(events, "r1")
    assert [e.seq for e in run] == [0, 1]
    assert git_report(run[0]) == GitReport(branch="task/t1", base="main")
    assert final_result(run[1]).result.terminal_reason == "no_result"
    assert not remote.has("refs/heads/task/t1")


async def test_a_prepare_failure_refuses_the_turn(tmp_path: Path, remote: Remote) -> None:
    agent = writing_agent()
    async with running(tmp_path, agent, provider="claude") as h:
        await h.send(prompt(remote, "r1", base="no-such-base"))
        events = await h.wait_for(lambda ev: len(results(ev)) == 1)
        await h.send({"prompt": "plain turn", "request_id": "r2"})  # the worker goes on
        events = await h.wait_for(lambda ev: len(results(ev)) == 2)
    run = run_of(events, "r1")
    assert [e.payload.type for e in run] == ["error", "result"]
    result = final_result(run[-1]).result
    assert (result.status, result.terminal_reason) == (ResultStatus.ERROR, "git_failed")
    second = run_of(events, "r2")
    assert final_result(second[-1]).result.status is ResultStatus.SUCCESS
    assert not any(isinstance(e.payload, LifecyclePayload) for e in second)  # no git step
    assert (tmp_path / "work" / "feature.txt").read_text() == "plain turn\n"
    assert git(remote.path, "branch", "--list") == "* main"
