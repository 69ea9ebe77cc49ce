"""A standby worker: wait for a :class:`WorkerAssignment`, then serve as that worker.

Every worker container boots in standby (``codeyard-worker --standby SLOT``): a cold create
publishes the assignment right before starting the container, a warm-pool claim publishes
it to a container that has waited for a while. Decisions:

* **Warm before waiting.** The agent is built (provider adapter imported, spec and
  launcher made) and the event bus is reached before the wait, so a claim only costs the
  read waking up, a shim and a cheap rebuild of the agent object, the instructions file
  and the ``ready`` event.
* **Reading.** ``worker:standby:{SLOT}`` is read from ``0-0`` with blocking reads, so an
  assignment published before the process started is not missed. An entry that is not a
  valid assignment is logged and skipped; the first valid one wins.
* **Then the stream is deleted**: the assignment may hold env values, which should not
  outlive their use on the bus.
* **Serving** is :class:`~codeyard.app.worker_wrapper.WorkerWrapper` as worker
  ``assignment.worker_id`` with the assignment's instructions, its ``env`` under every
  turn's env, and its ``allowed_commands`` enforced twice (see
  :mod:`codeyard.app.command_shim`): in the request for the providers whose CLI enforces
  it, and by a PATH shim for all.
* **Cancellation while waiting** (SIGTERM: the warm pool shrinking) publishes nothing: no
  worker exists yet.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import structlog
from pydantic import ValidationError

from codeyard.app.command_shim import build_shim
from codeyard.app.worker_wrapper import WorkerWrapper
from codeyard.domain.base import validation_errors
from codeyard.domain.errors import InvalidInput
from codeyard.domain.streams import standby_stream
from codeyard.domain.worker_io import INPUT_FIELD, InvalidWorkerInput, WorkerAssignment
from codeyard.ports.clock import Clock
from codeyard.ports.code_agent import CodeAgent
from codeyard.ports.event_bus import EventBus

log = structlog.get_logger(__name__)

#: Rebuilds the agent with a shim's PATH when the assignment restricts commands (cheap:
#: the warm agent's modules are loaded). ``None`` keeps the spec's PATH.
AgentBuilder = Callable[[str | None], CodeAgent]


@dataclass(frozen=True)
class StandbyConfig:
    """What a standby worker knows before its assignment.

    ``agent_executable``: the CLI the shim must link (``None``: none, e.g. in-memory
    agents). ``native_allowlist``: whether the provider's adapter takes
    ``AgentRequest.allowed_commands``. ``search_path``: where allowed commands are
    resolved (``None``: this process's PATH).
    """

    slot: str
    provider: str
    workdir: Path
    home: Path
    heartbeat_s: float = 10.0
    agent_executable: str | None = None
    native_allowlist: bool = False
    search_path: str | None = None
    poll_s: float = 1.0
    #: The container's secret variables (:func:`codeyard.domain.secrets.secret_env`).
    secret_env: Mapping[str, str] = field(default_factory=dict)


def parse_assignment(fields: dict[str, str]) -> WorkerAssignment:
    """The assignment in a standby entry; raises :class:`InvalidWorkerInput`."""
    raw = fields.get(INPUT_FIELD)
    if raw is None:
        raise InvalidWorkerInput(
            f"standby entry has no {INPUT_FIELD!r} field", fields=sorted(fields)
        )
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidWorkerInput("assignment is not JSON", detail=str(exc)) from exc
    if not isinstance(data, dict):
        raise InvalidWorkerInput("assignment must be a JSON object")
    try:
        return WorkerAssignment.model_validate(data)
    except ValidationError as exc:
        raise InvalidWorkerInput("malformed assignment", errors=validation_errors(exc)) from exc
    except InvalidInput as exc:  # DomainModel validators raise typed errors directly
        raise InvalidWorkerInput(exc.message, **exc.fields) from exc


async def receive_assignment(bus: EventBus, slot: str, *, poll_s: float = 1.0) -> WorkerAssignment:
    """Wait for the first valid assignment on ``slot``'s standby stream, then delete it."""
    stream = standby_stream(slot)
    cursor = "0-0"
    while True:
        for entry in await bus.read(stream, after=cursor, count=10, block_s=poll_s):
            cursor = entry.id
            try:
                assignment = parse_assignment(entry.fields)
            except InvalidWorkerInput as exc:
                log.warning("standby: entry skipped", entry=entry.id, error=exc.to_dict())
                continue
            await bus.delete_stream(stream)
            return assignment


async def run_standby(
    bus: EventBus,
    clock: Clock,
    config: StandbyConfig,
    agent: CodeAgent,
    build: AgentBuilder,
    *,
    bus_back: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Wait for the assignment, then serve as its worker (module doc).

    ``agent`` is the warm agent, already built; ``build`` replaces it for a command shim.
    ``bus_back``: see :class:`~codeyard.app.worker_wrapper.WorkerWrapper`.
    """
    await bus.length(standby_stream(config.slot))  # reach the bus before the wait
    log.info("standby: waiting", slot=config.slot, provider=config.provider)
    assignment = await receive_assignment(bus, config.slot, poll_s=config.poll_s)
    pinned: dict[str, str] = {}
    allowed: tuple[str, ...] = ()
    if assignment.allowed_commands:
        shim = await anyio.to_thread.run_sync(
            lambda: build_shim(
                config.home,
                assignment.allowed_commands,
                agent_executable=config.agent_executable,
                search_path=config.search_path,
            )
        )
        agent = build(shim.path)
        pinned["PATH"] = shim.path
        if config.native_allowlist:
            allowed = assignment.allowed_commands
        else:
            log.info(
                "standby: the CLI cannot restrict commands itself; PATH shim only",
                provider=config.provider,
            )
    log.info("standby: assigned", slot=config.slot, worker_id=assignment.worker_id)
    wrapper = WorkerWrapper(
        assignment.worker_id,
        bus,
        agent,
        workdir=config.workdir,
        instructions=assignment.instructions,
        provider=config.provider,
        clock=clock,
        heartbeat_s=config.heartbeat_s,
        base_env=assignment.env,
        pinned_env=pinned,
        allowed_commands=allowed,
        secret_env=config.secret_env,
        bus_back=bus_back,
    )
    await wrapper.run()
