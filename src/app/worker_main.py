"""``codeyard worker``: one worker wrapper process, wired from settings and options.

The event bus comes from the ``CODEYARD_*`` settings and must be Redis: a worker talks to
clients through streams another process can read, which the in-memory bus is not. SIGTERM
(``docker stop``) and SIGINT cancel the wrapper, which then still publishes its
``stopped`` event (and a ``cancelled`` result for a turn in flight) before exiting.

Two modes: ``worker_id`` serves that worker at once; ``standby_slot`` first waits for an
assignment on ``worker:standby:{slot}`` (:mod:`codeyard.app.worker_standby`), and a
signal during that wait ends the process without publishing anything.
"""

from __future__ import annotations

import dataclasses
import signal
from dataclasses import dataclass
from pathlib import Path

import anyio

from codeyard.app.bootstrap import open_app
from codeyard.app.settings import InvalidSettings, Settings, env_var_name
from codeyard.app.worker_agent import (
    NATIVE_ALLOWLIST,
    AgentOptions,
    agent_executable,
    build_agent,
    takes_options,
)
from codeyard.app.worker_standby import StandbyConfig, run_standby
from codeyard.app.worker_wrapper import WorkerWrapper
from codeyard.ports.code_agent import CodeAgent


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

    def __post_init__(self) -> None:
        if (self.worker_id is None) == (self.standby_slot is None):
            msg = "exactly one of worker_id and standby_slot"
            raise ValueError(msg)


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
    async with open_app(settings) as app, anyio.create_task_group() as tg:

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(stop_on_signal)
        if config.standby_slot is not None:
            standby = StandbyConfig(
                slot=config.standby_slot,
                provider=config.provider,
                workdir=config.workdir,
                home=config.home,
                heartbeat_s=config.heartbeat_s,
                agent_executable=agent_executable(config.provider, config.agent),
                native_allowlist=config.provider in NATIVE_ALLOWLIST,
            )
            await run_standby(app.event_bus, app.clock, standby, agent, build)
        else:
            assert config.worker_id is not None  # __post_init__
            wrapper = WorkerWrapper(
                config.worker_id,
                app.event_bus,
                agent,
                workdir=config.workdir,
                instructions=config.instructions,
                provider=config.provider,
                clock=app.clock,
                heartbeat_s=config.heartbeat_s,
            )
            await wrapper.run()
        tg.cancel_scope.cancel()
