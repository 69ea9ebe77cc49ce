"""A worker-like container for running a real CLI by ``docker exec``: the local busybox test
image (no registry here) with the host's glibc and the pinned binary bind-mounted
read-only (the binaries are native and need only libc), HOME and the workspace mounted
from the host so the test can look at what the CLI wrote."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import docker
import docker.errors
import docker.models.containers

from codeyard.adapters.cli.agent import CliCodeAgent
from codeyard.adapters.cli.types import ProviderSpec
from codeyard.adapters.docker.exec_launcher import DockerExecLauncher
from codeyard.testing.model_server import ModelServer, Scenario
from tests.services import service_unavailable

#: The host's glibc (Debian/Ubuntu x86-64 layout), mounted where the binary looks for it.
GLIBC_DIRS = ("/lib/x86_64-linux-gnu", "/lib64")
HOME, WORKSPACE = "/home/agent", "/workspace"


@dataclass(frozen=True)
class Worker:
    container: docker.models.containers.Container
    #: The CLI binary, as the container sees it.
    binary: str
    home: Path
    workspace: Path


@contextlib.contextmanager
def busybox_worker(
    docker_client: docker.DockerClient, test_image: str, tmp_path: Path, binary: Path, cli_dir: str
) -> Iterator[Worker]:
    """The container (``sleep`` under an init), ``binary``'s folder mounted at ``cli_dir``,
    ``tmp_path/home`` at ``HOME`` and ``tmp_path/workspace`` at ``WORKSPACE``; removed on
    exit. Skips (fails in CI) without a glibc to mount."""
    missing = [d for d in GLIBC_DIRS if not Path(d).is_dir()]
    if missing:
        service_unavailable("a glibc to mount", f"{missing} missing on this host", "x86-64 Debian")
    home, workspace = tmp_path / "home", tmp_path / "workspace"
    home.mkdir()
    workspace.mkdir()
    volumes = {d: {"bind": d, "mode": "ro"} for d in GLIBC_DIRS}
    volumes[str(binary.parent)] = {"bind": cli_dir, "mode": "ro"}
    volumes[str(home)] = {"bind": HOME, "mode": "rw"}
    volumes[str(workspace)] = {"bind": WORKSPACE, "mode": "rw"}
    container = docker_client.containers.run(
        test_image,
        ["sleep", "3600"],
        detach=True,
        init=True,
        volumes=volumes,
        labels={"dev.codeyard.test": "1"},
    )
    try:
        yield Worker(container, f"{cli_dir}/{binary.name}", home, workspace)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)


@contextlib.asynccontextmanager
async def exec_agent(
    worker: Worker,
    docker_client: docker.DockerClient,
    scenario: Scenario,
    make_spec: Callable[[ModelServer], ProviderSpec],
) -> AsyncIterator[CliCodeAgent]:
    """An agent running ``make_spec(server)`` by ``docker exec`` in ``worker``, against a
    model server on all interfaces (the container reaches it over the default bridge)."""
    async with ModelServer(scenario, host="0.0.0.0") as server:
        launcher = DockerExecLauncher(docker_client, str(worker.container.id))
        spec = make_spec(server)
        yield CliCodeAgent(spec, launcher, worker.home, cli_home=PurePosixPath(HOME))


def processes_named(worker: Worker, name: str) -> list[str]:
    """Live processes in the container, other than its init and ``sleep``, whose command
    line holds ``name``."""
    top = worker.container.top(ps_args="-o pid,stat,args")
    rows = [dict(zip(top["Titles"], p, strict=True)) for p in top["Processes"]]
    return [r["COMMAND"] for r in rows if name in r["COMMAND"] and "Z" not in r["STAT"]]
