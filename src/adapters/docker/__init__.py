"""Docker adapters (docker SDK, blocking calls in anyio threads): the container runtime,
``exec`` process launcher, worker image builder and image cache.

Constructors take a ``docker.DockerClient``; :func:`open_docker_client` is for entry points.
"""

from codeyard.adapters.docker.client import open_docker_client
from codeyard.adapters.docker.container_runtime import DockerContainerRuntime
from codeyard.adapters.docker.exec_launcher import DockerExecLauncher
from codeyard.adapters.docker.image_builder import DockerImageBuilder
from codeyard.adapters.docker.image_cache import DockerImageCache

__all__ = [
    "DockerContainerRuntime",
    "DockerExecLauncher",
    "DockerImageBuilder",
    "DockerImageCache",
    "open_docker_client",
]
