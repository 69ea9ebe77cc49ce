"""``codeyard worker``: one worker wrapper process, wired from settings and options.

The event bus comes from the ``CODEYARD_*`` settings and must be Redis: a worker talks to
clients through streams another process can read, which the in-memory bus is not. SIGTERM
(``docker stop``) and SIGINT cancel the wrapper, which then still publishes its
``stopped`` event (and a ``cancelled`` result for a turn in flight) before exiting.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import anyio

from codeyard.app.bootstrap import open_app
from codeyard.app.settings import InvalidSettings, Settings, env_var_name
from codeyard.app.worker_agent import AgentOptions, build_agent
from codeyard.app.worker_wrapper import WorkerWrapper


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    provider: str
    workdir: Path
    home: Path
    instructions: str | None
    heartbeat_s: float
    agent: AgentOptions


async def run_worker(settings: Settings, config: WorkerConfig) -> None:
    """Serve until a stop message, SIGTERM or SIGINT."""
    if settings.backends.event_bus != "redis":
        raise InvalidSettings(
            "the worker needs a shared event bus: set "
            f"{env_var_name('backends', 'event_bus')}=redis and {env_var_name('redis_url')}",
            env=env_var_name("backends", "event_bus"),
        )
    agent = build_agent(config.provider, config.agent, home=config.home)
    async with open_app(settings) as app:
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
        async with anyio.create_task_group() as tg:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            await wrapper.run()
            tg.cancel_scope.cancel()
