"""``codeyard worker``: one worker wrapper process, wired from settings and options.

The event bus comes from the ``CODEYARD_*`` settings and must be Redis: a worker talks to
clients through streams another process can read, which the in-memory bus is not. SIGTERM
(``docker stop``) and SIGINT cancel the wrapper, which then still publishes its
``stopped`` event (and a ``cancelled`` result for a turn in flight) before exiting.

Two modes: ``worker_id`` serves that worker at once; ``standby_slot`` first waits for an
assignment on ``worker:standby:{slot}`` (:mod:`codeyard.app.worker_standby`), and a
signal during that wait ends the process without publishing anything.

Lean on purpose: a worker needs the event bus and a clock, nothing else, so it opens one
Redis client itself instead of going through :func:`codeyard.app.bootstrap.open_app`, whose
imports (docker, asyncpg, dependency-injector) cost ~0.3 s of every container's start
(measured by bench/spawn.py). The container's command is ``codeyard-worker``
(:mod:`codeyard.app.worker_cli`), which skips the typer/rich CLI for the same reason.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import redis.asyncio as aioredis

from codeyard.adapters.memory.clock import SystemClock
from codeyard.adapters.redis.connect import ping_redis
from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.app.settings import InvalidSettings, Settings, env_var_name
from codeyard.app.worker_agent import (
    NATIVE_ALLOWLIST,
    AgentOptions,
    agent_executable,
    build_agent,
    takes_options,
)
from codeyard.app.worker_outage import OutageBus, OutageGuard
from codeyard.app.worker_standby import StandbyConfig, run_standby
from codeyard.app.worker_wrapper import WorkerWrapper
from codeyard.ports.clock import Clock
from codeyard.ports.code_agent import CodeAgent

#: How long reaching Redis may take before the worker gives up (the manager then reports
#: the container's exit).
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class WorkerConfig:
    """Exactly one of ``worker_id`` and ``standby_slot``; ``instructions`` only with
    ``worker_id`` (a standby worker gets its instructions from the assignment)."""

    worker_id: str | None
    provider: str
    workdir: Path
    home: Path
    instructions: str | None
    heartbeat_s: float
    agent: AgentOptions
    standby_slot: str | None = None
    #: The container's credential-store variables: in every turn's env, redacted.
    secret_env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.worker_id is None) == (self.standby_slot is None):
            msg = "exactly one of worker_id and standby_slot"
            raise ValueError(msg)


@asynccontextmanager
async def open_worker_bus(settings: Settings, guard: OutageGuard) -> AsyncIterator[OutageBus]:
    """The worker's event bus on its own Redis client, pinged, every call through ``guard``
    (a Redis outage is waited out up to its bound, then ``RedisOutageTooLong``)."""
    client = aioredis.Redis.from_url(
        settings.secret("redis_url"),
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
    )
    bus = RedisEventBus(client)
    try:
        # A worker started while Redis restarts waits for it like a running one.
        await guard.call("ping", lambda: ping_redis(client, timeout_s=CONNECT_TIMEOUT_S))
        yield OutageBus(bus, guard)
    finally:
        with anyio.move_on_after(settings.shutdown_timeout_s, shield=True):
            await bus.aclose()


async def run_worker(settings: Settings, config: WorkerConfig) -> None:
    """Serve until a stop message, SIGTERM or SIGINT."""
    if settings.backends.event_bus != "redis":
        raise InvalidSettings(
            "the worker needs a shared event bus: set "
            f"{env_var_name('backends', 'event_bus')}=redis and {env_var_name('redis_url')}",
            env=env_var_name("backends", "event_bus"),
        )

    def build(path: str | None) -> CodeAgent:
        # Providers without options get the shim's PATH through the request env instead.
        options = config.agent
        if path is not None and takes_options(config.provider):
            options = dataclasses.replace(options, path=path)
        return build_agent(config.provider, options, home=config.home)

    # Before connecting: a provider or option the worker cannot run fails fast (InvalidInput),
    # and a standby worker is warm (adapter imported) before it waits.
    agent = build(None)
    clock = SystemClock()
    guard = OutageGuard(settings.worker_redis_outage_s)
    try:
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            # Before connecting: a worker waiting for Redis still stops on a signal.
            tg.start_soon(stop_on_signal)
            async with open_worker_bus(settings, guard) as bus:
                await _serve(bus, clock, config, agent, build)
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The serving task's error (RedisOutageTooLong...), not anyio's wrapper: the signal
        # task never fails.
        raise group.exceptions[0] from None


async def _serve(
    bus: OutageBus,
    clock: Clock,
    config: WorkerConfig,
    agent: CodeAgent,
    build: Callable[[str | None], CodeAgent],
) -> None:
    if config.standby_slot is not None:
        standby = StandbyConfig(
            slot=config.standby_slot,
            provider=config.provider,
            workdir=config.workdir,
            home=config.home,
            heartbeat_s=config.heartbeat_s,
            agent_executable=agent_executable(config.provider, config.agent),
            native_allowlist=config.provider in NATIVE_ALLOWLIST,
            secret_env=config.secret_env,
        )
        await run_standby(bus, clock, standby, agent, build, bus_back=bus.guard.wait_recovered)
    else:
        assert config.worker_id is not None  # __post_init__
        wrapper = WorkerWrapper(
            config.worker_id,
            bus,
            agent,
            workdir=config.workdir,
            instructions=config.instructions,
            provider=config.provider,
            clock=clock,
            heartbeat_s=config.heartbeat_s,
            secret_env=config.secret_env,
            bus_back=bus.guard.wait_recovered,
        )
        await wrapper.run()
