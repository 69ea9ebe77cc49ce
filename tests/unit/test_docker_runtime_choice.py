"""The runtime choice of codeyard.adapters.docker.runtimes (pure: no engine)."""

from __future__ import annotations

from typing import Any

import pytest

from codeyard.adapters.docker._mapping import create_kwargs
from codeyard.adapters.docker.runtimes import (
    DIND_DATA_ROOT,
    RUNSC,
    SYSBOX,
    EngineRuntimes,
    apply_runtime,
    choose_runtime,
)
from codeyard.domain.container import ContainerSpec, ExitReason, Mount, exit_reason
from codeyard.domain.errors import InvalidRequest, RuntimeNotAvailable
from codeyard.domain.worker import NetworkPolicy, WorkerSpec

PLAIN = EngineRuntimes.from_info({"Runtimes": {"runc": {"path": "runc"}}})
GVISOR = EngineRuntimes.from_info(
    {
        "Runtimes": {
            "runc": {"path": "runc"},
            "runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]},
        }
    }
)
SYSBOXED = EngineRuntimes.from_info({"Runtimes": {"runc": {}, "sysbox-runc": {"path": "x"}}})


def spec(**kwargs: Any) -> ContainerSpec:
    return ContainerSpec(image="img", **kwargs)


def test_default_is_the_engines_default() -> None:
    assert choose_runtime(spec(), PLAIN) is None
    assert choose_runtime(spec(runtime="runc"), PLAIN) == "runc"


def test_a_missing_runtime_is_refused_with_what_exists() -> None:
    with pytest.raises(RuntimeNotAvailable) as caught:
        choose_runtime(spec(runtime=SYSBOX), GVISOR)
    assert caught.value.fields == {"runtime": SYSBOX, "available": ["runc", "runsc"]}


def test_runsc_without_network_needs_network_none() -> None:
    assert GVISOR.has_no_network(RUNSC)
    assert choose_runtime(spec(runtime=RUNSC, network=NetworkPolicy.NONE), GVISOR) == RUNSC
    with pytest.raises(RuntimeNotAvailable):
        choose_runtime(spec(runtime=RUNSC), GVISOR)
    networked = EngineRuntimes.from_info({"Runtimes": {"runsc": {"path": "runsc"}}})
    assert choose_runtime(spec(runtime=RUNSC), networked) == RUNSC


def test_dind_prefers_sysbox_and_keeps_its_confinement() -> None:
    dind = spec(docker_in_docker=True)
    kwargs = apply_runtime(create_kwargs(dind, {}), dind, SYSBOXED)
    assert kwargs["runtime"] == SYSBOX
    assert "cap_add" not in kwargs
    assert "cap_drop" not in kwargs
    assert kwargs["security_opt"] == ["no-new-privileges"]
    [volume] = kwargs["mounts"]
    assert (volume["Target"], volume["Type"]) == (DIND_DATA_ROOT, "volume")


def test_dind_without_sysbox_needs_the_opt_in() -> None:
    with pytest.raises(RuntimeNotAvailable, match="allow_insecure_dind"):
        choose_runtime(spec(docker_in_docker=True), PLAIN)
    dind = spec(docker_in_docker=True, allow_insecure_dind=True)
    kwargs = apply_runtime(create_kwargs(dind, {}), dind, PLAIN)
    assert "runtime" not in kwargs
    assert (kwargs["cap_add"], kwargs["cap_drop"]) == (["ALL"], ["SYS_RESOURCE"])
    assert kwargs["security_opt"] == ["seccomp=unconfined", "apparmor=unconfined"]
    assert kwargs["device_cgroup_rules"] == ["a *:* rwm"]
    assert [m["Target"] for m in kwargs["mounts"]] == [DIND_DATA_ROOT, "/sys/fs/cgroup"]


def test_dind_reserves_its_data_root() -> None:
    dind = spec(
        docker_in_docker=True, allow_insecure_dind=True, mounts=(Mount(target=DIND_DATA_ROOT),)
    )
    with pytest.raises(InvalidRequest):
        apply_runtime(create_kwargs(dind, {}), dind, PLAIN)


def test_worker_spec_opt_in_defaults_off() -> None:
    assert WorkerSpec().allow_insecure_dind is False
    assert spec().init is True


@pytest.mark.parametrize(
    ("code", "oom", "stopped", "reason"),
    [
        (0, False, False, ExitReason.EXITED),
        (3, False, True, ExitReason.EXITED),
        (137, True, False, ExitReason.OOM),
        (137, True, True, ExitReason.OOM),
        (137, False, True, ExitReason.STOPPED),
        (143, False, True, ExitReason.STOPPED),
        (137, False, False, ExitReason.EXITED),
        (143, True, False, ExitReason.EXITED),
    ],
)
def test_exit_reason(code: int, oom: bool, stopped: bool, reason: ExitReason) -> None:
    assert exit_reason(code, oom_killed=oom, stopped=stopped) is reason
