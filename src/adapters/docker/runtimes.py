"""Which OCI runtime a container gets, and what Docker-in-Docker needs (pure, no I/O).

- ``spec.runtime`` names one (``runc``, ``sysbox-runc``, ``runsc``): the engine must list it
  in ``docker info`` "Runtimes", else ``RuntimeNotAvailable``.
- ``runsc`` (gVisor) registered with ``--network=none`` in its runtimeArgs (the only way it
  starts on these kernels, see FACTS.md) gives a container no network at all, whatever
  Docker attaches: a spec asking for a network is refused instead of silently cut off.
- ``docker_in_docker`` (the DOCKER module): sysbox-runc when the engine lists it (its user
  namespace makes root in the container unprivileged on the host; caps are not dropped, the
  inner dockerd needs them; not measured here: no sysbox package for Debian). Without
  sysbox only with ``allow_insecure_dind``, which applies the set measured in FACTS.md —
  all capabilities but SYS_RESOURCE, seccomp and AppArmor off, every device allowed, the
  host's cgroup tree writable: root on the host in all but name. ``--privileged`` is never
  used (it fails on these VMs). ``/var/lib/docker`` gets an anonymous volume (removed with
  the container): on the container's own overlay root the inner daemon falls back to the
  slow ``vfs`` driver.

Measured on this engine (tests/integration/test_docker_runtimes.py runs it): the inner
dockerd, started with ``exec`` as ``user="0"``, is up in ~0.5 s with overlay2 and runs a
container. FACTS.md's ``systempaths=unconfined`` is not needed for that (and the API
refuses it as a security option: the CLI turns it into MaskedPaths/ReadonlyPaths, which
docker-py cannot set). ``no-new-privileges`` together with a non-root ``user`` makes the
inner dockerd fail (``failed to mount overlay: operation not permitted``), so it is left
out and the spec's ``user`` kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker.types

from codeyard.domain.container import ContainerSpec
from codeyard.domain.errors import InvalidRequest, RuntimeNotAvailable
from codeyard.domain.worker import NetworkPolicy

RUNC = "runc"
SYSBOX = "sysbox-runc"
RUNSC = "runsc"

#: The near-root set measured to run dockerd inside a container without --privileged.
INSECURE_DIND: Mapping[str, Any] = {
    "cap_add": ["ALL"],
    "cap_drop": ["SYS_RESOURCE"],
    "security_opt": ["seccomp=unconfined", "apparmor=unconfined"],
    "device_cgroup_rules": ["a *:* rwm"],
}
DIND_DATA_ROOT = "/var/lib/docker"
_CGROUP = "/sys/fs/cgroup"


@dataclass(frozen=True)
class EngineRuntimes:
    """The runtimes an engine offers: name -> its ``runtimeArgs``."""

    args: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> EngineRuntimes:
        """From ``GET /info`` (``{"Runtimes": {"runsc": {"path", "runtimeArgs"}}}``)."""
        found: dict[str, tuple[str, ...]] = {}
        for name, entry in (info.get("Runtimes") or {}).items():
            raw = entry.get("runtimeArgs") if isinstance(entry, Mapping) else None
            found[str(name)] = tuple(str(a) for a in raw or ())
        return cls(found)

    def __contains__(self, name: object) -> bool:
        return name in self.args

    def has_no_network(self, name: str) -> bool:
        """True when the runtime itself cuts the network (runsc ``--network=none``)."""
        return "--network=none" in self.args.get(name, ())


def choose_runtime(spec: ContainerSpec, engine: EngineRuntimes) -> str | None:
    """The runtime to ask Docker for (``None``: the engine's default).

    Raises ``RuntimeNotAvailable`` for a runtime the engine lacks, for a network the runtime
    cannot give, and for Docker-in-Docker without sysbox nor ``allow_insecure_dind``.
    """
    runtime = spec.runtime
    if runtime is None and spec.docker_in_docker and SYSBOX in engine:
        runtime = SYSBOX
    if runtime is not None and runtime not in engine:
        raise RuntimeNotAvailable(
            "container runtime not offered by the engine",
            runtime=runtime,
            available=sorted(engine.args),
        )
    cut = runtime is not None and engine.has_no_network(runtime)
    if cut and spec.network is not NetworkPolicy.NONE:
        raise RuntimeNotAvailable(
            "this runtime is registered without network (runtimeArgs --network=none):"
            " use network=none",
            runtime=runtime,
            network=spec.network.value,
        )
    if spec.docker_in_docker and runtime != SYSBOX and not spec.allow_insecure_dind:
        raise RuntimeNotAvailable(
            "Docker-in-Docker needs sysbox-runc, which the engine does not offer; without it"
            " the container would be root on the host: set allow_insecure_dind to accept that",
            runtime=SYSBOX,
            available=sorted(engine.args),
        )
    return runtime


def apply_runtime(
    kwargs: Mapping[str, Any], spec: ContainerSpec, engine: EngineRuntimes
) -> dict[str, Any]:
    """``kwargs`` (from ``create_kwargs``) with the chosen runtime and, for DinD, what the
    inner daemon needs."""
    runtime = choose_runtime(spec, engine)
    out = dict(kwargs)
    out.pop("runtime", None)
    if runtime is not None:
        out["runtime"] = runtime
    if not spec.docker_in_docker:
        return out
    if any(m.target == DIND_DATA_ROOT for m in spec.mounts):
        raise InvalidRequest(
            "Docker-in-Docker mounts its own data root",
            errors=[{"loc": "mounts", "msg": f"{DIND_DATA_ROOT} is reserved"}],
        )
    # The inner dockerd needs capabilities: dropping them all would stop it under any runtime.
    out.pop("cap_drop", None)
    mounts = [*out.get("mounts", ()), docker.types.Mount(DIND_DATA_ROOT, None, type="volume")]
    if runtime != SYSBOX:
        # Replaces security_opt: no-new-privileges goes (see the module docstring).
        out.update({k: list(v) for k, v in INSECURE_DIND.items()})
        mounts.append(docker.types.Mount(_CGROUP, _CGROUP, type="bind", read_only=False))
    out["mounts"] = mounts
    return out
