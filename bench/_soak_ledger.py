"""The workload of bench/soak_faults.py and the books it keeps to check the invariants.

Every command the soak sends goes through :class:`Ledger` (its request id and kind kept),
every run a create starts is recorded with its worker; reply streams are never deleted, so
at the end each command's replies and each run's results can be counted. Redis may be
down at any moment: every call retries on the bus's ``CodeyardError`` (a publish the
server did not acknowledge is sent again)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.domain.commands import (
    AnyCommand,
    CreateResult,
    CreateWorker,
    DeleteWorker,
    ListWorkers,
    Reply,
    command_fields,
)
from codeyard.domain.errors import CodeyardError
from codeyard.domain.events import AgentEvent, ResultPayload
from codeyard.domain.streams import COMMANDS_STREAM, response_stream, worker_output_stream
from codeyard.domain.worker import WorkerSpec
from codeyard.domain.worker_io import EVENT_FIELD

T = TypeVar("T")
PROMPT = "do the soak task"
#: Retried bus calls give up after this long (Redis is down for about a second).
BUS_DEADLINE_S = 120.0


async def retrying(call: Callable[[], Awaitable[T]], deadline_s: float = BUS_DEADLINE_S) -> T:
    """``call()``, again after a short pause while the bus raises (Redis down)."""
    with anyio.fail_after(deadline_s):
        while True:
            try:
                return await call()
            except CodeyardError:
                await anyio.sleep(0.1)


@dataclass
class Ledger:
    bus: RedisEventBus
    #: request id -> command type, in sending order.
    commands: dict[str, str] = field(default_factory=dict)
    #: publishes the bus refused and the soak sent again (Redis down).
    publish_retries: int = 0
    #: run id (the create's prompt request id) -> worker id.
    runs: dict[str, str] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    #: One row per task: seconds since the soak began at each step, the worker, outcome.
    tasks: list[dict[str, Any]] = field(default_factory=list)
    began: float = field(default_factory=time.monotonic)

    def now(self) -> float:
        return round(time.monotonic() - self.began, 2)

    async def send(self, command: AnyCommand) -> str:
        self.commands[command.request_id] = command.type

        async def publish() -> None:
            try:
                await self.bus.publish(COMMANDS_STREAM, command_fields(command))
            except CodeyardError:
                self.publish_retries += 1
                raise

        await retrying(publish)
        return command.request_id

    async def replies(self, request_id: str) -> list[Reply]:
        entries = await retrying(lambda: self.bus.read(response_stream(request_id), count=10))
        return [Reply.from_fields(e.fields) for e in entries]

    async def reply(self, request_id: str, deadline_s: float) -> Reply | None:
        """The first reply to ``request_id`` within ``deadline_s``, else None."""
        with anyio.move_on_after(deadline_s):
            # The manager is another process: nothing to wait on but polling its stream.
            while not (found := await self.replies(request_id)):  # noqa: ASYNC110
                await anyio.sleep(0.1)
            return found[0]
        return None

    async def results(self, worker_id: str) -> list[AgentEvent]:
        entries = await retrying(
            lambda: self.bus.read(worker_output_stream(worker_id), count=100_000)
        )
        events = [
            AgentEvent.parse(e.fields[EVENT_FIELD]) for e in entries if EVENT_FIELD in e.fields
        ]
        return [e for e in events if isinstance(e.payload, ResultPayload)]

    async def wait_result(self, worker_id: str, run_id: str, deadline_s: float) -> str:
        """``success``, ``error:<terminal reason>`` or ``no_result`` within the deadline."""
        with anyio.move_on_after(deadline_s):
            while True:
                for event in await self.results(worker_id):
                    if event.run_id == run_id and isinstance(event.payload, ResultPayload):
                        result = event.payload.result
                        reason = result.terminal_reason or "error"
                        return result.status.value if result.status.value == "success" else reason
                await anyio.sleep(0.2)
        return "no_result"


async def task_loop(
    ledger: Ledger, stop: anyio.Event, errors: Counter[str], result_timeout_s: float
) -> None:
    """One client doing real work until ``stop``: create a worker with a prompt, wait for
    the run's result, delete the worker. Error replies are tallied by code, not fatal."""
    while not stop.is_set():
        rid = uuid.uuid4().hex
        row: dict[str, Any] = {"create_s": ledger.now()}
        ledger.tasks.append(row)
        await ledger.send(CreateWorker(request_id=rid, spec=WorkerSpec(), prompt=PROMPT))
        reply = await ledger.reply(rid, deadline_s=240)
        row["reply_s"] = ledger.now()
        if reply is None or not reply.ok:
            row["outcome"] = "create:" + _code(reply)
            errors["create:" + _code(reply)] += 1
            await anyio.sleep(1)
            continue
        made = CreateResult.model_validate(reply.result)
        if made.prompt_request_id is None:
            errors["create:no_run"] += 1
            continue
        ledger.runs[made.prompt_request_id] = made.worker_id
        row.update(worker_id=made.worker_id, run_id=made.prompt_request_id)
        outcome = await ledger.wait_result(made.worker_id, made.prompt_request_id, result_timeout_s)
        ledger.outcomes[outcome] += 1
        row.update(result_s=ledger.now(), outcome=outcome)
        for _ in range(10):  # a delete refused while Postgres is down is asked again
            delete = await ledger.send(
                DeleteWorker(request_id=uuid.uuid4().hex, worker_id=made.worker_id)
            )
            answer = await ledger.reply(delete, deadline_s=120)
            if answer is not None and answer.ok:
                row["deleted_s"] = ledger.now()
                break
            errors["delete:" + _code(answer)] += 1
            await anyio.sleep(1)


async def pinger(ledger: Ledger, stop: anyio.Event, every_s: float = 1.0) -> None:
    """A ``list`` every second that nobody waits for: commands arriving during each fault."""
    while not stop.is_set():
        await ledger.send(ListWorkers(request_id=uuid.uuid4().hex))
        await anyio.sleep(every_s)


async def probe(ledger: Ledger, began: float, deadline_s: float = 180.0) -> float | None:
    """Seconds from ``began`` until a fresh ``list`` is answered ok (the manager serves
    again), None past the deadline. Each attempt is a new command, waited 1 s."""
    with anyio.move_on_after(deadline_s):
        while True:
            rid = await ledger.send(ListWorkers(request_id=uuid.uuid4().hex))
            reply = await ledger.reply(rid, deadline_s=1.0)
            if reply is not None and reply.ok:
                return time.monotonic() - began
    return None


def _code(reply: Reply | None) -> str:
    if reply is None:
        return "no_reply"
    return str((reply.error or {}).get("code", "error"))


async def verify(ledger: Ledger, drain_s: float) -> dict[str, Any]:
    """Wait up to ``drain_s`` for every command's reply, then count: commands answered
    not once, runs without exactly one result, reply codes."""
    with anyio.move_on_after(drain_s):
        for rid in list(ledger.commands):
            while not await ledger.replies(rid):  # noqa: ASYNC110 - another process answers
                await anyio.sleep(0.2)
    await anyio.sleep(2)  # a duplicate reply or result would come right after the first
    per_command = {rid: await ledger.replies(rid) for rid in ledger.commands}
    codes: Counter[str] = Counter(
        "ok" if r.ok else _code(r) for replies in per_command.values() for r in replies
    )
    results: dict[str, int] = {}
    by_worker: dict[str, list[AgentEvent]] = {}
    for run_id, worker_id in ledger.runs.items():
        if worker_id not in by_worker:
            by_worker[worker_id] = await ledger.results(worker_id)
        results[run_id] = sum(e.run_id == run_id for e in by_worker[worker_id])
    # What the workers of those runs did publish as results (e.g. a death with no run id).
    seen = {
        run_id: [
            {"run_id": e.run_id, "reason": e.payload.result.terminal_reason}
            for e in by_worker[ledger.runs[run_id]]
            if isinstance(e.payload, ResultPayload)
        ]
        for run_id, n in results.items()
        if n != 1
    }
    return {
        "commands": len(ledger.commands),
        "commands_by_type": dict(Counter(ledger.commands.values())),
        "unanswered": [rid for rid, r in per_command.items() if not r],
        "answered_twice_or_more": {rid: len(r) for rid, r in per_command.items() if len(r) > 1},
        "reply_codes": dict(codes),
        "service_unavailable": codes.get("service_unavailable", 0),
        "publish_retries": ledger.publish_retries,
        "runs": len(ledger.runs),
        "run_outcomes": dict(ledger.outcomes),
        "runs_without_one_result": {r: n for r, n in results.items() if n != 1},
        "their_workers_results": seen,
    }
