"""Opening a Docker client: for entry points (nothing connects at import time)."""

from __future__ import annotations

import docker

from codeyard.adapters.docker._mapping import DOCKER_ERRORS
from codeyard.domain.errors import ServiceUnavailable

#: Above DockerContainerRuntime's default max_concurrency (16), with headroom for threads
#: abandoned by cancelled ``exec``/``wait`` calls.
DEFAULT_MAX_POOL_SIZE = 32


def open_docker_client(
    base_url: str | None = None,
    *,
    max_pool_size: int = DEFAULT_MAX_POOL_SIZE,
    timeout_s: int = 60,
) -> docker.DockerClient:
    """A pinged client for ``base_url`` (default: the environment, ``DOCKER_HOST``...).

    Blocking: call it from an entry point, or through ``anyio.to_thread.run_sync``.
    Raises ``ServiceUnavailable(service="docker")`` when the engine does not answer.
    """
    client: docker.DockerClient | None = None
    try:
        if base_url is None:
            client = docker.from_env(max_pool_size=max_pool_size, timeout=timeout_s)
        else:
            client = docker.DockerClient(
                base_url=base_url, max_pool_size=max_pool_size, timeout=timeout_s
            )
        client.ping()
    except DOCKER_ERRORS as exc:
        if client is not None:
            client.close()
        raise ServiceUnavailable(
            "Docker engine unreachable", service="docker", base_url=base_url, detail=str(exc)
        ) from exc
    return client
