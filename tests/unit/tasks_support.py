"""An in-process stand-in for the worker manager, for task-run tests without containers.

``InProcessManager`` answers create/delete through a real CommandService; each created
worker is a real :class:`WorkerWrapper` (git flow included) running in this process on the
in-memory bus, with a :class:`ScriptedCodeAgent` whose script writes files into the
worker's workdir. Scripts are chosen by a marker in the prompt, like the scripted model
server's router: ``{"[task:a]": {"a.txt": "A\\n"}}``; a feedback prompt (it names the task
id) picks ``"<marker> round 2"`` when such a key exists.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from anyio.abc import TaskGroup
from pydantic import JsonValue

from codeyard.adapters.memory.clock import SystemClock
from codeyard.adapters.memory.code_agent import ScriptedCodeAgent, ScriptItem, default_script
from codeyard.app.command_service import CommandService, CommandServiceConfig
from codeyard.app.worker_wrapper import WorkerWrapper
from codeyard.domain.agent import AgentRequest
from codeyard.domain.commands import (
    AnyCommand,
    CreateResult,
    CreateWorker,
    DeleteResult,
    DeleteWorker,
)
from codeyard.domain.errors import InvalidRequest, WorkerNotFound
from codeyard.domain.worker import WorkerStatus
from codeyard.ports.event_bus import EventBus

#: marker -> files the agent writes (path relative to the workdir -> content).
Edits = Mapping[str, Mapping[str, str]]


def file_writer(
    edits: Edits, *, hook: Callable[[AgentRequest], None] | None = None
) -> ScriptedCodeAgent:
    """A scripted agent writing the files of the first marker its prompt contains."""

    def script(request: AgentRequest) -> list[ScriptItem]:
        if hook is not None:
            hook(request)
        keys = sorted(edits, key=len, reverse=True)  # "[task:a] round 2" before "[task:a]"
        marker = next((k for k in keys if k in request.prompt), None)
        for path, content in (edits.get(marker, {}) if marker else {}).items():
            target = Path(request.workdir or ".") / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        return list(default_script(request))

    return ScriptedCodeAgent(script)


class InProcessManager:
    def __init__(self, bus: EventBus, root: Path, agent: Callable[[], ScriptedCodeAgent]) -> None:
        self.bus = bus
        self.root = root
        self.agent = agent
        self.created: list[str] = []
        self.deleted: list[str] = []
        self._scopes: dict[str, anyio.CancelScope] = {}
        self._tg: TaskGroup | None = None

    async def handle(self, command: AnyCommand) -> JsonValue:
        if isinstance(command, CreateWorker):
            worker_id = command.worker_id or "w-" + uuid.uuid4().hex[:8]
            await self._spawn(worker_id)
            self.created.append(worker_id)
            made = CreateResult(worker_id=worker_id, status=WorkerStatus.RUNNING)
            return made.model_dump(mode="json")
        if isinstance(command, DeleteWorker):
            scope = self._scopes.pop(command.worker_id, None)
            if scope is None:
                raise WorkerNotFound("no such worker", worker_id=command.worker_id)
            scope.cancel()
            self.deleted.append(command.worker_id)
            gone = DeleteResult(worker_id=command.worker_id, status=WorkerStatus.STOPPED)
            return gone.model_dump(mode="json")
        raise InvalidRequest("not supported by the in-process manager", type=command.type)

    async def _spawn(self, worker_id: str) -> None:
        assert self._tg is not None
        wrapper = WorkerWrapper(
            worker_id,
            self.bus,
            self.agent(),
            workdir=self.root / worker_id,
            instructions="Work on the task.",
            provider="scripted",
            clock=SystemClock(),
            heartbeat_s=60,
            poll_s=0.05,
        )
        scope = anyio.CancelScope()
        self._scopes[worker_id] = scope

        async def serve() -> None:
            with scope:
                await wrapper.run()

        self._tg.start_soon(serve)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[InProcessManager]:
        config = CommandServiceConfig(block_s=0.05, reclaim_interval_s=0.5)
        async with anyio.create_task_group() as tg:
            self._tg = tg
            await tg.start(CommandService(self.bus, self, config).run)
            yield self
            tg.cancel_scope.cancel()
