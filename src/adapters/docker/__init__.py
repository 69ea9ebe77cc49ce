"""Docker adapters (docker SDK, blocking calls in anyio threads): the container runtime.

Constructors take a ``docker.DockerClient``; :func:`open_docker_client` is for entry points.
"""

from codeyard.adapters.docker.client import open_docker_client
from codeyard.adapters.docker.container_runtime import DockerContainerRuntime
from codeyard.adapters.docker.exec_launcher import DockerExecLauncher

__all__ = ["DockerContainerRuntime", "DockerExecLauncher", "open_docker_client"]
