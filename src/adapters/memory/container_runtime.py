"""An in-memory ContainerRuntime: a bookkeeping model of containers that runs NOTHING."""

from __future__ import annotations

import math
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import anyio
import anyio.lowlevel

from codeyard.adapters.container_labels import container_labels
from codeyard.adapters.memory import _shell
from codeyard.adapters.memory.clock import SystemClock
from codeyard.domain.container import (
    ContainerInfo,
    ContainerSpec,
    ContainerState,
    ExecResult,
    exit_reason,
)
from codeyard.domain.errors import (
    AlreadyExists,
    Conflict,
    ContainerNotFound,
    ImageNotFound,
    RuntimeNotAvailable,
)
from codeyard.domain.worker import NetworkPolicy
from codeyard.ports.clock import Clock

#: Exit codes of a process ended by SIGTERM / SIGKILL, as Docker reports them.
EXIT_SIGTERM = 143
EXIT_SIGKILL = 137


@dataclass
class _Container:
    id: str
    name: str
    spec: ContainerSpec
    labels: dict[str, str]
    ip: str | None
    state: ContainerState = ContainerState.CREATED
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    logs: str = ""
    files: dict[str, str] = field(default_factory=dict)
    #: anyio time at which the main process ends by itself (``inf``: never).
    ends_at: float = math.inf
    pending_exit: int = 0
    pending_duration_s: float = 0.0
    exited: anyio.Event = field(default_factory=anyio.Event)
    #: A stop was asked for (the fake has no OOM: its reasons are stopped or exited).
    stopped: bool = False


class InMemoryContainerRuntime:
    """A :class:`~codeyard.ports.container_runtime.ContainerRuntime` stand-in.

    It runs nothing: no process, no isolation, no limits. It keeps the state machine of a
    container (created -> running -> exited, removal) and interprets a handful of argv forms
    in Python (see ``codeyard.adapters.memory._shell``: ``echo``, ``sh -c 'exit N'``,
    ``cat`` of files written by ``sh -c 'echo x > FILE'``, ``sleep N``...). Unsupported argv
    ends with exit code 127 and ``not found`` on stderr, like a shell. The main process is
    the spec's ``entrypoint + command`` (``sh`` when both are empty, which exits at once);
    a ``sleep`` main process keeps the container running for that long (anyio time).
    ``stop`` ends a running main process as if by SIGTERM (exit 143); forced ``remove``
    as if by SIGKILL. Resource limits, users, mounts and the network are recorded, not
    enforced; a container that is not ``network=none`` gets a made-up IP while running.

    ``images``: the image names ``create`` accepts (``None``: any). ``runtimes``: the OCI
    runtime names ``spec.runtime`` may name. Single event loop only; not thread-safe.
    """

    def __init__(
        self,
        *,
        owner: str,
        clock: Clock | None = None,
        images: Collection[str] | None = None,
        runtimes: Collection[str] = ("runc",),
    ) -> None:
        self._owner = owner
        self._clock = clock or SystemClock()
        self._images = None if images is None else frozenset(images)
        self._runtimes = frozenset(runtimes)
        self._containers: dict[str, _Container] = {}  # insertion order = creation order

    # --- lifecycle -----------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        await anyio.lowlevel.checkpoint()
        if spec.runtime is not None and spec.runtime not in self._runtimes:
            raise RuntimeNotAvailable(
                "container runtime not offered",
                runtime=spec.runtime,
                available=sorted(self._runtimes),
            )
        if self._images is not None and spec.image not in self._images:
            raise ImageNotFound("no such image", image=spec.image)
        cid = secrets.token_hex(32)
        name = spec.name or f"codeyard-{cid[:12]}"
        if any(c.name == name for c in self._containers.values()):
            raise AlreadyExists("container name already in use", name=name)
        labels = container_labels(spec, owner=self._owner, now=self._clock.now())
        n = len(self._containers) % 250 + 2
        ip = None if spec.network is NetworkPolicy.NONE else f"10.88.0.{n}"
        self._containers[cid] = _Container(id=cid, name=name, spec=spec, labels=labels, ip=ip)
        return self._info(self._containers[cid])

    async def start(self, container_id: str) -> None:
        await anyio.lowlevel.checkpoint()
        box = self._get(container_id)
        if box.state is ContainerState.RUNNING:
            return
        argv = [*(box.spec.entrypoint or ()), *box.spec.command] or ["sh"]
        outcome = _shell.run(argv, self._context(box, None, None))
        box.state, box.exit_code, box.finished_at = ContainerState.RUNNING, None, None
        box.started_at = self._clock.now()
        box.exited = anyio.Event()
        box.logs += outcome.stdout + outcome.stderr
        box.pending_exit, box.pending_duration_s = outcome.exit_code, outcome.duration_s
        box.ends_at = anyio.current_time() + outcome.duration_s
        self._refresh(box)

    async def wait(self, container_id: str, *, timeout_s: float | None = None) -> int:
        box = self._get(container_id)
        with anyio.fail_after(timeout_s):
            while True:
                self._refresh(box)
                if box.state is not ContainerState.RUNNING:
                    # Like Docker's default "not-running" condition: a created container
                    # counts as not running and reports 0.
                    await anyio.lowlevel.checkpoint()
                    return box.exit_code or 0
                with anyio.move_on_after(box.ends_at - anyio.current_time()):
                    await box.exited.wait()

    async def stop(self, container_id: str, *, timeout_s: float = 10.0) -> None:
        await anyio.lowlevel.checkpoint()
        box = self._get(container_id)
        self._refresh(box)
        if box.state is ContainerState.RUNNING:
            box.stopped = True
            self._finish(box, EXIT_SIGTERM, self._clock.now())

    async def remove(self, container_id: str, *, force: bool = True) -> None:
        await anyio.lowlevel.checkpoint()
        box = self._find(container_id)
        if box is None:
            return
        self._refresh(box)
        if box.state is ContainerState.RUNNING:
            if not force:
                raise Conflict("cannot remove a running container", container_id=container_id)
            self._finish(box, EXIT_SIGKILL, self._clock.now())
        del self._containers[box.id]

    # --- processes -----------------------------------------------------------------------

    async def exec(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str | None = None,
        user: str | None = None,
    ) -> ExecResult:
        await anyio.lowlevel.checkpoint()
        box = self._get(container_id)
        self._refresh(box)
        if box.state is not ContainerState.RUNNING:
            raise Conflict("container is not running", container_id=container_id)
        outcome = _shell.run(argv, self._context(box, env, workdir))
        if outcome.duration_s > 0:
            await anyio.sleep(outcome.duration_s)
        return ExecResult(exit_code=outcome.exit_code, stdout=outcome.stdout, stderr=outcome.stderr)

    async def logs(self, container_id: str, *, tail: int | None = None) -> str:
        await anyio.lowlevel.checkpoint()
        box = self._get(container_id)
        self._refresh(box)
        if tail is None:
            return box.logs
        lines = box.logs.splitlines(keepends=True)
        return "".join(lines[-tail:]) if tail > 0 else ""

    # --- queries -------------------------------------------------------------------------

    async def inspect(self, container_id: str) -> ContainerInfo:
        await anyio.lowlevel.checkpoint()
        box = self._get(container_id)
        self._refresh(box)
        return self._info(box)

    async def list(self, labels: Mapping[str, str] | None = None) -> list[ContainerInfo]:
        await anyio.lowlevel.checkpoint()
        wanted = dict(labels or {}).items()
        found = []
        for box in self._containers.values():
            if wanted <= box.labels.items():
                self._refresh(box)
                found.append(self._info(box))
        return found

    # --- internals -----------------------------------------------------------------------

    def _find(self, container_id: str) -> _Container | None:
        box = self._containers.get(container_id)
        if box is None:
            box = next((c for c in self._containers.values() if c.name == container_id), None)
        return box

    def _get(self, container_id: str) -> _Container:
        box = self._find(container_id)
        if box is None:
            raise ContainerNotFound("no such container", container_id=container_id)
        return box

    def _context(
        self, box: _Container, env: Mapping[str, str] | None, workdir: str | None
    ) -> _shell.Context:
        merged = {"PATH": "/usr/local/bin:/usr/bin:/bin", **box.spec.env, **(env or {})}
        return _shell.Context(box.files, merged, workdir or box.spec.workdir or "/")

    def _refresh(self, box: _Container) -> None:
        """End the main process if its time has come."""
        if box.state is ContainerState.RUNNING and anyio.current_time() >= box.ends_at:
            assert box.started_at is not None
            ended = box.started_at + timedelta(seconds=box.pending_duration_s)
            self._finish(box, box.pending_exit, ended)

    def _finish(self, box: _Container, exit_code: int, when: datetime) -> None:
        box.state, box.exit_code, box.finished_at = ContainerState.EXITED, exit_code, when
        box.ends_at = math.inf
        box.exited.set()

    def _info(self, box: _Container) -> ContainerInfo:
        return ContainerInfo(
            id=box.id,
            name=box.name,
            image=box.spec.image,
            state=box.state,
            labels=dict(box.labels),
            exit_code=box.exit_code,
            ip=box.ip if box.state is ContainerState.RUNNING else None,
            started_at=box.started_at,
            finished_at=box.finished_at,
            reason=(
                None
                if box.exit_code is None
                else exit_reason(box.exit_code, oom_killed=False, stopped=box.stopped)
            ),
        )
