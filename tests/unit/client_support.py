"""A fake worker manager for client tests: a real CommandService with a scripted handler.

The handler answers every command type with a well-formed result; a headless create
also plays the worker and publishes the prompt's result on the worker's output stream
(unless ``silent_workers`` is set, to make a run wait forever).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import anyio
from pydantic import JsonValue

from codeyard.app.command_service import CommandService, CommandServiceConfig
from codeyard.domain.agent import AgentResult, ResultStatus
from codeyard.domain.commands import (
    AnyCommand,
    CreateResult,
    CreateWorker,
    DeleteResult,
    DeleteWorker,
    GetLogs,
    GetStatus,
    ListResult,
    ListWorkers,
    LogsResult,
    SendPrompt,
    SendResult,
)
from codeyard.domain.errors import QuotaExceeded, WorkerNotFound
from codeyard.domain.events import AgentEvent, ResultPayload
from codeyard.domain.streams import COMMANDS_STREAM, worker_output_stream
from codeyard.domain.worker import WorkerRecord, WorkerSpec, WorkerStatus
from codeyard.domain.worker_io import EVENT_FIELD, TYPE_FIELD
from codeyard.ports.event_bus import EventBus


def record(worker_id: str) -> WorkerRecord:
    now = datetime.now(UTC)
    return WorkerRecord(
        worker_id=worker_id,
        spec=WorkerSpec(),
        status=WorkerStatus.IDLE,
        created_at=now,
        heartbeat_at=now,
    )


def result_event(
    worker_id: str, run_id: str | None, text: str, reason: str | None = None
) -> dict[str, str]:
    """The output entry fields of a run's result event."""
    result = AgentResult(
        status=ResultStatus.SUCCESS if reason is None else ResultStatus.ERROR,
        provider="claude",
        text=text,
        terminal_reason=reason,
    )
    event = AgentEvent(
        worker_id=worker_id, run_id=run_id, seq=0, payload=ResultPayload(result=result)
    )
    return {EVENT_FIELD: event.model_dump_json(), TYPE_FIELD: "result"}


class FakeManager:
    """Answers commands; ``missing`` is not found, ``boom`` is a bug, ``full`` refuses."""

    def __init__(self, bus: EventBus, *, silent_workers: bool = False) -> None:
        self.bus = bus
        self.silent_workers = silent_workers
        self.seen: list[AnyCommand] = []
        self.deleted: list[str] = []

    async def handle(self, command: AnyCommand) -> JsonValue:
        self.seen.append(command)
        worker_id = getattr(command, "worker_id", None) or "w-made"
        if worker_id == "missing":
            raise WorkerNotFound("no such worker", worker_id=worker_id)
        if worker_id == "boom":
            raise KeyError("a bug")
        match command:
            case CreateWorker():
                if command.spec.labels.get("quota") == "full":
                    raise QuotaExceeded("too many workers", limit=1)
                return await self._create(command, worker_id)
            case DeleteWorker():
                self.deleted.append(worker_id)
                return DeleteResult(worker_id=worker_id, status=WorkerStatus.STOPPED).model_dump(
                    mode="json"
                )
            case GetStatus():
                return record(worker_id).model_dump(mode="json")
            case ListWorkers():
                workers = (record("w-1"), record("w-2"))
                return ListResult(workers=workers).model_dump(mode="json")
            case GetLogs():
                return LogsResult(worker_id=worker_id, logs=f"tail={command.tail}").model_dump()
            case SendPrompt():
                sent = SendResult(
                    worker_id=worker_id, request_id=command.request_id, entry_id="1-0"
                )
                return sent.model_dump()

    async def _create(self, command: CreateWorker, worker_id: str) -> JsonValue:
        prompt_id = None
        if command.prompt is not None:
            prompt_id = f"p-{uuid.uuid4().hex[:8]}"
            if not self.silent_workers:
                fields = result_event(worker_id, prompt_id, f"did: {command.prompt}")
                await self.bus.publish(worker_output_stream(worker_id), fields)
        created = CreateResult(
            worker_id=worker_id, status=WorkerStatus.STARTING, prompt_request_id=prompt_id
        )
        return created.model_dump(mode="json")


@asynccontextmanager
async def manager(bus: EventBus, handler: FakeManager) -> AsyncIterator[CommandService]:
    """A CommandService on ``worker:commands`` served until the block ends."""
    config = CommandServiceConfig(
        stream=COMMANDS_STREAM, consumer="test", block_s=0.05, reclaim_interval_s=0.5
    )
    service = CommandService(bus, handler, config)
    async with anyio.create_task_group() as tg:
        await tg.start(service.run)
        yield service
        tg.cancel_scope.cancel()
