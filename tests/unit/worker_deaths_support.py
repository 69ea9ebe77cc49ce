"""The worker deaths the run_tasks tests stage (tests/unit/test_run_tasks_deaths.py and
test_run_tasks_commits.py): a :class:`Reaper` kills workers the way the manager reports
a dead container, optionally after the doomed turn pushed its change."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import anyio

from codeyard.adapters.memory.code_agent import (
    Pause,
    ScriptedCodeAgent,
    ScriptItem,
    default_script,
)
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
from codeyard.domain.worker_io import EVENT_FIELD, TYPE_FIELD
from tests.unit.run_tasks_support import Setup
from tests.unit.tasks_support import Edits


@dataclass(frozen=True)
class Death:
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
    report is out before the death (the worker died between its push and its result);
    ``report_push=False``: that report never got out (it died right after the push)."""

    def __init__(
        self,
        setup: Setup,
        edits: Edits,
        doom: dict[str, list[str]],
        *,
        in_run: bool = True,
        push_first: bool = False,
        report_push: bool = True,
    ) -> None:
        self.setup = setup
        self.edits = edits
        self.doom = doom
        self.in_run = in_run
        self.push_first = push_first
        self.report_push = report_push
        self.pushed: list[str] = []  # commits doomed turns pushed
        self.prompts: list[tuple[str, str]] = []  # (worker id, prompt) of every turn
        self.found: dict[str, set[str]] = {}  # worker id -> files its checkout had
        self.send, self.receive = anyio.create_memory_object_stream[Death](100)

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
                report = report if self.report_push else None
                self.send.send_nowait(Death(request.worker_id, request.id, reason, report))
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
