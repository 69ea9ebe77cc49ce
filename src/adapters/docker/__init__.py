"""Docker adapters (docker SDK, blocking calls in anyio threads): the container runtime.

Constructors take a ``docker.DockerClient``; :func:`open_docker_client` is for entry points.
"""

from codeyard.adapters.docker.client import open_docker_client
from codeyard.adapters.docker.container_runtime import DockerContainerRuntime

__all__ = ["DockerContainerRuntime", "open_docker_client"]
