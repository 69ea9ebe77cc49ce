"""``codeyard demo``: the parts that exist today, run for real in one process.

The embedded app (memory event bus, queue and registry; the Docker runtime when the engine
answers) takes three jobs; three workers claim them concurrently, run each through the
ScriptedCodeAgent (offline, no model: the real CLI adapters land with issue #3), publish
every event to their output stream and complete the job. The report is what the ports
answered, not what the demo intended.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import anyio
import anyio.to_thread

from codeyard.adapters.docker.client import open_docker_client
from codeyard.adapters.memory.code_agent import SCRIPTED_PROVIDER, ScriptedCodeAgent
from codeyard.app.bootstrap import App, open_app
from codeyard.app.settings import Settings
from codeyard.domain.agent import AgentRequest
from codeyard.domain.container import LABEL_OWNER
from codeyard.domain.errors import AgentFailed
from codeyard.domain.events import AgentEvent
from codeyard.domain.streams import worker_output_stream
from codeyard.domain.task import JobStatus, Task
from codeyard.domain.worker import WorkerRecord, WorkerSpec, WorkerStatus

QUEUE = "demo"
PROMPTS = (
    "Add a README section about configuration",
    "Fix the flaky retry test",
    "Rename Worker.host to Worker.node",
)
#: Pause before each scripted event, so the three runs visibly overlap.
STEP_DELAY_S = 0.05

RuntimeChoice = Literal["auto", "memory", "docker"]


@dataclass(frozen=True)
class DemoRow:
    job_id: str
    worker_id: str
    prompt: str
    events_published: int
    event_types: str
    job_status: JobStatus
    result_status: str
    result_text: str
    started_s: float
    finished_s: float


@dataclass(frozen=True)
class DemoReport:
    runtime: str
    runtime_note: str
    rows: tuple[DemoRow, ...]
    wall_s: float


async def docker_answers(timeout_s: float = 5.0) -> tuple[bool, str]:
    try:
        with anyio.fail_after(timeout_s):
            client = await anyio.to_thread.run_sync(
                lambda: open_docker_client(max_pool_size=2, timeout_s=3), abandon_on_cancel=True
            )
        client.close()
    except Exception as exc:  # any failure: fall back to the memory runtime
        return False, f"{type(exc).__name__}: {exc}"
    return True, "engine answered"


async def run_demo(runtime: RuntimeChoice = "auto", settings: Settings | None = None) -> DemoReport:
    """Run the demo on the configured backends (``CODEYARD_BACKENDS__*``; memory by default).

    ``runtime`` overrides the configured container runtime; ``auto`` picks Docker when the
    engine answers.
    """
    note = "chosen"
    if runtime == "auto":
        answered, why = await docker_answers()
        runtime = "docker" if answered else "memory"
        note = why if answered else f"no Docker engine ({why}); using memory"
    base = settings or Settings()
    settings = base.model_copy(
        update={"backends": base.backends.model_copy(update={"runtime": runtime})}
    )
    # Unique per run: a durable registry (Postgres) keeps the workers of earlier runs.
    run_tag = uuid.uuid4().hex[:8]
    agent = ScriptedCodeAgent(step_delay_s=STEP_DELAY_S)
    async with open_app(settings, overrides={"code_agent": agent}) as app:
        if runtime == "docker":
            mine = await app.runtime.list({LABEL_OWNER: settings.owner})
            note += (
                f"; list() round trip: {len(mine)} container(s) of owner {settings.owner}"
                " (the demo starts none: workers in containers come with the worker manager)"
            )
        started = anyio.current_time()
        for prompt in PROMPTS:
            task = Task(request=AgentRequest(provider=SCRIPTED_PROVIDER, prompt=prompt))
            await app.queue.enqueue(QUEUE, task.model_dump(mode="json"), job_id=task.id)
        rows: list[DemoRow] = []
        async with anyio.create_task_group() as tg:
            for n in range(1, len(PROMPTS) + 1):
                tg.start_soon(_worker, app, f"demo-{run_tag}-worker-{n}", started, rows)
        wall = anyio.current_time() - started
    rows.sort(key=lambda r: r.worker_id)
    return DemoReport(runtime, note, tuple(rows), wall)


async def _worker(app: App, worker_id: str, t0: float, rows: list[DemoRow]) -> None:
    now = app.clock.now()
    record = WorkerRecord(worker_id=worker_id, spec=WorkerSpec(), created_at=now, heartbeat_at=now)
    await app.registry.register(record)
    await app.registry.set_status(worker_id, WorkerStatus.IDLE)
    stream = worker_output_stream(worker_id)
    while (job := await app.queue.claim(QUEUE, worker_id, lease=timedelta(minutes=5))) is not None:
        task = Task.parse(job.payload)
        request = AgentRequest.parse(
            {**task.request.model_dump(), "worker_id": worker_id, "task_id": task.id}
        )
        await app.registry.set_status(worker_id, WorkerStatus.BUSY, task_id=task.id)
        began = anyio.current_time() - t0
        final: AgentEvent | None = None
        async with contextlib.aclosing(app.code_agent.execute(request)) as events:
            async for event in events:
                await app.event_bus.publish(stream, {"event": event.model_dump_json()})
                final = event
        published = await app.event_bus.read(stream, count=10_000)
        mine = [AgentEvent.parse(m.fields["event"]) for m in published]
        mine = [e for e in mine if e.run_id == request.id]
        if final is None or final.payload.type != "result":  # the port guarantees it
            raise AgentFailed("the run ended without a result", request_id=request.id)
        result = final.payload.result
        done = await app.queue.complete(
            job.id, worker_id, result={"status": result.status.value, "text": result.text}
        )
        rows.append(
            DemoRow(
                job_id=job.id,
                worker_id=worker_id,
                prompt=task.request.prompt,
                events_published=len(mine),
                event_types=" ".join(e.type.value for e in mine),
                job_status=done.status,
                result_status=result.status.value,
                result_text=result.text,
                started_s=began,
                finished_s=anyio.current_time() - t0,
            )
        )
        await app.registry.set_status(worker_id, WorkerStatus.IDLE)
    await app.registry.set_status(worker_id, WorkerStatus.STOPPED)
