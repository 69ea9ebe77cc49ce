"""``codeyard worker`` with a prompt's git step: the REAL Claude Code CLI (scripted model
server) writes a file with its Write tool; the worker commits it on the task branch and
pushes that branch to a local bare repository."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from codeyard.domain.agent import ResultStatus
from codeyard.domain.code_host import GitReport
from codeyard.domain.events import LifecyclePayload, ResultPayload
from codeyard.testing.model_server import ModelServer, Scenario, Text
from codeyard.testing.model_server.tools import TOOLS
from tests.integration.test_worker_wrapper_cli import results, worker
from tests.unit.test_worker_git import Remote

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_the_agent_writes_a_file_and_the_worker_pushes_the_task_branch(
    redis_db: str, tmp_path: Path
) -> None:
    remote = Remote(tmp_path)
    target = tmp_path / "work" / "hello.txt"
    scenario = Scenario(
        turns=[
            [Text("I'll write the file."), TOOLS["claude"].write_file(str(target), "hi\n")],
            [Text("Written.")],
        ]
    )
    git = {"repo_url": remote.url, "branch": "task/hello", "commit_message": "feat: hello"}
    async with ModelServer(scenario) as server, worker(redis_db, server, tmp_path) as client:
        await client.send({"prompt": "write hello.txt", "request_id": "g1", "git": git})
        events = await client.wait_for(lambda ev: len(results(ev)) == 1)
        await client.send({"type": "stop"})
        with anyio.fail_after(20):
            assert await client.process.wait() == 0
    run = [e for e in events if e.run_id == "g1"]
    assert [e.seq for e in run] == list(range(len(run)))
    git_event, result_event = run[-2:]
    assert isinstance(git_event.payload, LifecyclePayload)
    assert git_event.payload.state == "git"
    report = GitReport.model_validate(git_event.payload.detail)
    assert isinstance(result_event.payload, ResultPayload)
    assert result_event.payload.result.status is ResultStatus.SUCCESS, result_event.payload
    head = remote.sha("refs/heads/task/hello")
    assert report.pushed
    assert report.commits == (head,)
    files = remote.files(head)
    assert "hello.txt" in files
    assert "CLAUDE.md" not in files  # the wrapper's instructions stay out of the commit
    assert remote.show(head, "hello.txt") == "hi"
    assert remote.show(head, "README.md") == "hello"  # branched from main
