"""An in-memory runtime whose worker containers keep running.

:class:`InMemoryContainerRuntime` runs nothing, so ``codeyard-worker ...`` there "exits 127"
as soon as it starts. The warm pool judges its standbys by their container state (a dead
one is dropped, a claim of one falls back), so tests of warm claims need them to run until
stopped or removed, like a real standby waiting for its assignment.
"""

from __future__ import annotations

from codeyard.adapters.memory.container_runtime import InMemoryContainerRuntime
from codeyard.app.manager.launch import LABEL_ROLE
from codeyard.domain.container import ContainerInfo, ContainerSpec


class LiveWorkersRuntime(InMemoryContainerRuntime):
    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        if LABEL_ROLE in spec.labels:  # a worker or standby the manager made
            spec = spec.model_copy(update={"command": ("sleep", "infinity")})
        return await super().create(spec)
