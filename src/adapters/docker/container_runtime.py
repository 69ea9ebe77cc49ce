"""ContainerRuntime on a real Docker engine, through the docker SDK (docker-py)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import docker
import docker.errors
import requests.exceptions

from codeyard.adapters.container_labels import container_labels
from codeyard.adapters.docker._mapping import (
    DOCKER_ERRORS,
    create_kwargs,
    info_from_inspect,
    info_from_summary,
    translate_error,
)
from codeyard.adapters.docker.networks import DockerNetworks
from codeyard.adapters.docker.runtimes import SYSBOX, EngineRuntimes, apply_runtime
from codeyard.adapters.memory.clock import SystemClock
from codeyard.domain.container import ContainerInfo, ContainerSpec, ContainerState, ExecResult
from codeyard.domain.errors import ContainerNotFound, InvalidRequest
from codeyard.ports.clock import Clock

T = TypeVar("T")

#: Seconds to wait for ``exec_inspect`` to publish an exit code once the output has ended.
_EXIT_CODE_GRACE_S = 2.0


def _text(data: bytes | None) -> str:
    return data.decode("utf-8", errors="replace") if data else ""


class DockerContainerRuntime:
    """:class:`~codeyard.ports.container_runtime.ContainerRuntime` backed by Docker.

    Every blocking docker-py call runs in a worker thread under one
    :class:`anyio.CapacityLimiter` (``max_concurrency``). docker-py breaks (``queue.Full``)
    when more threads than its connection pool share a client, so the client must be made
    with ``max_pool_size`` above ``max_concurrency``; the constructor checks it when it can.
    ``exec`` and ``wait`` may block for as long as the container's process runs, so
    cancelling them abandons the thread: it (and its pooled connection) is released when
    the process ends or the container is stopped or removed. Leave pool headroom for that.

    Every container gets the labels ``dev.codeyard.owner`` = ``owner`` and
    ``dev.codeyard.created-at`` (ISO 8601 UTC). ``list`` is not scoped to ``owner``: pass
    the owner label to see only this runtime's containers. See
    :func:`codeyard.adapters.docker._mapping.create_kwargs` for how a spec maps to Docker
    and :mod:`codeyard.adapters.docker.networks` for the networks and host firewall of
    EGRESS and ALLOWLIST (the host needs iptables; creating such a container as non-root
    fails with ``ServiceUnavailable``), and
    :mod:`codeyard.adapters.docker.runtimes` for the runtime choice and Docker-in-Docker.

    ``ContainerInfo.reason`` tells ``stopped`` from ``exited`` by remembering, in this
    object, which containers ``stop`` was called on: Docker does not record who sent a
    signal. Another process inspecting the same container sees ``exited`` instead.
    """

    def __init__(
        self,
        client: docker.DockerClient,
        *,
        owner: str,
        clock: Clock | None = None,
        max_concurrency: int = 16,
        bridge_tag: str = "",
    ) -> None:
        adapter = getattr(client.api, "_custom_adapter", None)
        pool = getattr(adapter, "max_pool_size", None)
        if isinstance(pool, int) and pool <= max_concurrency:
            raise InvalidRequest(
                "the Docker client's connection pool must exceed max_concurrency",
                errors=[
                    {
                        "loc": "client.max_pool_size",
                        "msg": f"{pool} <= max_concurrency {max_concurrency}",
                    }
                ],
            )
        self._client = client
        self._api = client.api
        self._owner = owner
        self._clock = clock or SystemClock()
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._runtimes: EngineRuntimes | None = None
        self._networks = DockerNetworks(
            client, owner=owner, limiter=self._limiter, bridge_tag=bridge_tag
        )
        self._stopped: set[str] = set()  # ids/names `stop` was called on, for `reason`

    async def _call(
        self,
        fn: Callable[[], T],
        *,
        container_id: str | None = None,
        image: str | None = None,
        abandon_on_cancel: bool = False,
    ) -> T:
        try:
            return await anyio.to_thread.run_sync(
                fn, limiter=self._limiter, abandon_on_cancel=abandon_on_cancel
            )
        except DOCKER_ERRORS as exc:
            raise translate_error(exc, container_id=container_id, image=image) from exc

    # --- lifecycle -----------------------------------------------------------------------

    async def create(self, spec: ContainerSpec) -> ContainerInfo:
        labels = container_labels(spec, owner=self._owner, now=self._clock.now())
        engine = await self._engine_runtimes(spec)
        mode = await self._networks.network_mode(spec)
        kwargs = apply_runtime(create_kwargs(spec, labels, network_mode=mode), spec, engine)
        container = await self._call(
            lambda: self._client.containers.create(**kwargs), image=spec.image
        )
        return info_from_inspect(container.attrs)

    async def _engine_runtimes(self, spec: ContainerSpec) -> EngineRuntimes:
        """The engine's runtimes when ``spec`` needs them; asked again whenever the cached
        answer lacks the one wanted (a runtime may be registered since)."""
        wanted = spec.runtime or (SYSBOX if spec.docker_in_docker else None)
        if wanted is None:
            return self._runtimes or EngineRuntimes({})
        if self._runtimes is None or wanted not in self._runtimes:
            info = await self._call(self._client.info)
            self._runtimes = EngineRuntimes.from_info(info)
        return self._runtimes

    async def start(self, container_id: str) -> None:
        self._stopped.discard(container_id)
        await self._call(lambda: self._api.start(container_id), container_id=container_id)

    async def wait(self, container_id: str, *, timeout_s: float | None = None) -> int:
        def run() -> int:
            began = time.monotonic()
            try:
                # requests takes a float read timeout; the stub says int.
                result = self._api.wait(container_id, timeout=timeout_s)  # type: ignore[arg-type]
            except requests.exceptions.RequestException as exc:
                # A read timeout surfaces as ReadTimeout or as ConnectionError wrapping it.
                if timeout_s is not None and time.monotonic() - began >= timeout_s:
                    msg = f"container {container_id} still running after {timeout_s} s"
                    raise TimeoutError(msg) from exc
                raise
            return int(result["StatusCode"])

        return await self._call(run, container_id=container_id, abandon_on_cancel=True)

    async def stop(self, container_id: str, *, timeout_s: float = 10.0) -> None:
        seconds = max(0, math.ceil(timeout_s))  # the API counts whole seconds
        self._stopped.add(container_id)
        await self._call(
            lambda: self._api.stop(container_id, timeout=seconds), container_id=container_id
        )

    async def remove(self, container_id: str, *, force: bool = True) -> None:
        self._stopped.discard(container_id)

        def run() -> None:
            try:
                self._api.remove_container(container_id, v=True, force=force)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 409 and "already in progress" in str(exc.explanation):
                    return
                raise

        await self._call(run, container_id=container_id)

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
        def run() -> ExecResult:
            created = self._api.exec_create(
                container_id,
                list(argv),
                environment=dict(env) if env else None,
                workdir=workdir,
                user=user or "",
            )
            exec_id = str(created["Id"])
            stdout, stderr = self._api.exec_start(exec_id, demux=True)
            deadline = time.monotonic() + _EXIT_CODE_GRACE_S
            details: dict[str, Any] = self._api.exec_inspect(exec_id)
            # The output can end a moment before the engine records the exit code.
            while details.get("ExitCode") is None and time.monotonic() < deadline:
                time.sleep(0.01)
                details = self._api.exec_inspect(exec_id)
            code = details.get("ExitCode")
            return ExecResult(
                exit_code=-1 if code is None else int(code),
                stdout=_text(stdout),
                stderr=_text(stderr),
            )

        return await self._call(run, container_id=container_id, abandon_on_cancel=True)

    async def logs(self, container_id: str, *, tail: int | None = None) -> str:
        data = await self._call(
            lambda: self._api.logs(
                container_id, stdout=True, stderr=True, tail="all" if tail is None else tail
            ),
            container_id=container_id,
        )
        return _text(data)

    # --- queries -------------------------------------------------------------------------

    async def inspect(self, container_id: str) -> ContainerInfo:
        attrs = await self._call(
            lambda: self._api.inspect_container(container_id), container_id=container_id
        )
        name = str(attrs.get("Name", "")).lstrip("/")
        stopped = bool({attrs["Id"], name, container_id} & self._stopped)
        return info_from_inspect(attrs, stopped=stopped)

    async def list(self, labels: Mapping[str, str] | None = None) -> list[ContainerInfo]:
        filters: dict[str, str | list[str] | bool] = {}
        if labels:
            filters["label"] = [f"{k}={v}" for k, v in labels.items()]
        found = await self._call(
            lambda: self._client.containers.list(all=True, filters=filters, sparse=True)
        )
        # The engine lists newest first; "Created" is in whole seconds, so sort stably.
        summaries = [c.attrs for c in reversed(found)]
        summaries.sort(key=lambda s: int(s.get("Created") or 0))
        infos: list[ContainerInfo | None] = [None] * len(summaries)

        async def inspect_into(index: int, container_id: str) -> None:
            with contextlib.suppress(ContainerNotFound):  # removed since the listing
                infos[index] = await self.inspect(container_id)

        async with anyio.create_task_group() as tg:
            for index, summary in enumerate(summaries):
                if summary.get("State") == ContainerState.CREATED.value:
                    # The sparse entry is complete for a created container: no IP, exit
                    # code or timestamps exist yet. Other states need an inspect.
                    infos[index] = info_from_summary(summary)
                else:
                    tg.start_soon(inspect_into, index, str(summary["Id"]))
        return [info for info in infos if info is not None]
