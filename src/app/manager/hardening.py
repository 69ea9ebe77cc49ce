"""Where a worker container may write: everything else is its read-only image.

The real worker image (the claude CLI, the wrapper, git; tests/faults/
test_worker_containers.py, tests/e2e/test_providers_docker.py for every CLI) runs with
only these writable:

* the workspace (``/workspace``, the image's ``WORKDIR``): the agent's files and clones.
  With ``resources.disk_mb`` a tmpfs of that size, so a full workspace is ENOSPC for
  the tool that filled it and nothing else (its pages count against ``memory_mb`` too).
  Without it an anonymous volume on the engine's disk, removed with the container: as
  unbounded as the writable layer it replaces, but out of RAM.
* ``HOME`` (``/home/worker``): the agent's own HOME ``~/.codeyard/workers/ID`` (sessions,
  settings, the command shim) and the npm/npx, pip and git caches the CLIs keep there.
* ``/tmp``: the CLIs' and tools' temporary files.

HOME and ``/tmp`` are bounded by the memory limit only: a process filling them is
OOM-killed rather than told ENOSPC.

Docker-in-Docker workers keep a writable root: their inner dockerd (started as root by
``exec``) keeps its state, socket and pid file in system folders; not tried read-only.
"""

from __future__ import annotations

from codeyard.adapters.docker.dockerfile import WORKER_HOME
from codeyard.domain.container import Mount
from codeyard.domain.worker import Module, WorkerSpec

TMP = "/tmp"


def read_only_root(spec: WorkerSpec) -> bool:
    """Whether the worker's root filesystem is read-only (all but Docker-in-Docker)."""
    return Module.DOCKER not in spec.modules


def writable_mounts(spec: WorkerSpec, workdir: str | None) -> tuple[Mount, ...]:
    """The writable places of a worker running in ``workdir`` (``None``: no workspace of
    its own, as with the local-process runtime, which applies no mounts anyway)."""
    mounts = [Mount(target=WORKER_HOME), Mount(target=TMP)]
    if workdir is not None:
        size = spec.resources.disk_mb
        workspace = (
            Mount(target=workdir, volume=True)
            if size is None
            else Mount(target=workdir, tmpfs_size_mb=size)
        )
        mounts.insert(0, workspace)
    return tuple(mounts)
