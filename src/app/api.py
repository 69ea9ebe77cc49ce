"""The Python API: ``async with Codeyard.from_settings() as cy: await cy.run(request)``.

One :class:`~codeyard.domain.agent.AgentRequest` runs in a fresh worker: a container made for
it (agent, instructions and allowed commands from the request), one turn, the worker
removed afterwards. :meth:`Codeyard.stream` yields the run's events as they arrive (the last
one is the result); :meth:`Codeyard.run` returns just the result.

Where the workers run: a ``codeyard serve`` when the settings name a Redis event bus
(``CODEYARD_BACKENDS__EVENT_BUS=redis`` and ``CODEYARD_REDIS_URL``), else the embedded
service (:mod:`codeyard.app.embedded`: a private Redis and an in-process manager on the local
Docker engine). The client underneath is :attr:`Codeyard.client` for everything else
(long-lived workers, events from any point, :class:`~codeyard.app.tasks.run_tasks.TaskRunner`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import anyio

from codeyard.app.embedded import open_embedded
from codeyard.app.settings import Settings
from codeyard.client import CodeyardClient
from codeyard.domain.agent import AgentRequest, AgentResult
from codeyard.domain.errors import InvalidRequest
from codeyard.domain.events import AgentEvent
from codeyard.domain.worker import WorkerSpec

CLEANUP_DEADLINE_S = 60.0


class Codeyard:
    def __init__(self, client: CodeyardClient, *, spec: WorkerSpec | None = None) -> None:
        """``spec``: the defaults of every worker this object makes (image modules,
        resources, network...); a request's provider, instructions and allowed commands
        override it."""
        self.client = client
        self._spec = spec or WorkerSpec()

    @classmethod
    @asynccontextmanager
    async def from_settings(
        cls, settings: Settings | None = None, *, spec: WorkerSpec | None = None, **manager: Any
    ) -> AsyncIterator[Codeyard]:
        """Connect as the settings say (module doc). ``manager``: embedded-mode overrides of
        the ``manager`` settings (``agent_base_url=...``, ``agent_api_key=...``)."""
        settings = settings or Settings()
        if settings.backends.event_bus == "redis":
            if manager:
                raise InvalidRequest(
                    "manager settings belong to the running service, not to its clients",
                    given=sorted(manager),
                )
            async with CodeyardClient.connect(settings.secret("redis_url")) as client:
                yield cls(client, spec=spec)
        else:
            async with open_embedded(settings, **manager) as embedded:
                yield cls(embedded.client, spec=spec)

    def worker_spec(self, request: AgentRequest) -> WorkerSpec:
        """The worker a request runs in."""
        return self._spec.model_copy(
            update={
                "agent": request.provider,
                "instructions": request.instructions or self._spec.instructions,
                "allowed_commands": request.allowed_commands or self._spec.allowed_commands,
            }
        )

    async def stream(self, request: AgentRequest) -> AsyncGenerator[AgentEvent, None]:
        """The events of ``request``'s run, the result last; the worker is removed after."""
        if request.session_id is not None:
            raise InvalidRequest(
                "a fresh worker has no session to resume: keep a worker (cy.client) instead",
                session_id=request.session_id,
            )
        worker_id = f"w-{uuid.uuid4().hex[:20]}"
        created = False
        try:
            await self.client.create(self.worker_spec(request), worker_id=worker_id)
            created = True
            await self.client.send(
                worker_id,
                request.prompt,
                request_id=request.id,
                model=request.model,
                timeout_s=request.timeout_s,
                max_turns=request.max_turns,
                env=request.env,
            )
            async with aclosing(self.client.events(worker_id)) as events:
                async for item in events:
                    if item.event.run_id != request.id and item.result is None:
                        continue  # the worker's own lifecycle events
                    yield item.event
                    if item.result is not None:
                        return
        finally:
            if created:
                with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_DEADLINE_S):
                    await self.client.delete(worker_id)

    async def run(self, request: AgentRequest) -> AgentResult:
        """Run ``request`` in a fresh worker and return its result."""
        async with aclosing(self.stream(request)) as events:
            async for event in events:
                result = getattr(event.payload, "result", None)
                if isinstance(result, AgentResult):
                    return result
        raise InvalidRequest("the run ended without a result", request_id=request.id)
