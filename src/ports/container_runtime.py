"""ContainerRuntime: create and control isolated worker containers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from codeyard.domain.container import ContainerInfo, ContainerSpec, ExecResult


@runtime_checkable
class ContainerRuntime(Protocol):
    """A container engine (Docker) or a stand-in.

    Contract:
    - Ids returned by ``create`` are accepted by every other method. A method given an id
      that does not exist raises ``ContainerNotFound`` — except ``remove``, which is
      idempotent and returns quietly.
    - ``create`` does not start the container; ``labels`` from the spec are returned by
      ``inspect``/``list`` unchanged. A runtime (``spec.runtime``) the engine lacks raises
      ``RuntimeNotAvailable``; an unknown image raises ``ImageNotFound``.
    - Engine unreachable: ``ServiceUnavailable(service="docker")``.
    - Cancelling a call may leave the container created/started; callers find it again with
      ``list`` by label and remove it (that is what labels are for).
    """

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        """Create (not start) a container and return its state (``created``)."""
        ...

    async def start(self, container_id: str) -> None:
        """Start a created container. Starting a running one is a no-op."""
        ...

    async def exec(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
    ) -> ExecResult:
        """Run ``argv`` inside a running container and wait for it; captures output."""
        ...

    async def wait(self, container_id: str, *, timeout_s: float | None = None) -> int:
        """Wait until the container exits and return its exit code.

        Raises ``TimeoutError`` when ``timeout_s`` passes first (the container keeps running).
        """
        ...

    async def logs(self, container_id: str, *, tail: int | None = None) -> str:
        """Combined stdout/stderr of the container's main process so far."""
        ...

    async def stop(self, container_id: str, *, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``. Stopping a stopped one is a no-op."""
        ...

    async def remove(self, container_id: str, *, force: bool = True) -> None:
        """Remove the container (killing it when ``force``). Idempotent."""
        ...

    async def inspect(self, container_id: str) -> ContainerInfo:
        """Current state, exit code, OOM flag, labels and IP."""
        ...

    async def list(self, labels: Mapping[str, str] | None = None) -> list[ContainerInfo]:
        """Containers (running or not) carrying every given label, oldest first."""
        ...
