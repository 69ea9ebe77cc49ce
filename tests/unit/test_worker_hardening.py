"""Worker containers: a read-only root with writable tmpfs/volumes only where the agent
writes (the Docker suite tests/faults/test_worker_containers.py runs them for real)."""

from __future__ import annotations

from typing import Any

from codeyard.adapters.docker._mapping import create_kwargs
from codeyard.app.manager.config import ManagerConfig
from codeyard.app.manager.launch import worker_container_spec
from codeyard.domain.container import ContainerSpec, Mount
from codeyard.domain.worker import Module, Resources, WorkerSpec

CONFIG = ManagerConfig(owner="m1")


def _spec(spec: WorkerSpec, config: ManagerConfig = CONFIG) -> dict[str, Any]:
    made = worker_container_spec(spec, image="i", image_hash="h", slot="w-1", config=config)
    return create_kwargs(made, {})


def test_a_worker_has_a_read_only_root_and_writes_to_home_tmp_and_a_workspace_volume() -> None:
    kwargs = _spec(WorkerSpec())
    assert kwargs["read_only"] is True
    assert kwargs["tmpfs"] == {
        "/home/worker": "exec,uid=1000,gid=1000",
        "/tmp": "exec,uid=1000,gid=1000",
    }
    (workspace,) = kwargs["mounts"]
    assert (workspace["Type"], workspace["Target"], workspace["Source"]) == (
        "volume",
        "/workspace",
        None,
    )
    assert kwargs["user"] == "1000:1000"
    assert kwargs["cap_drop"] == ["ALL"]
    assert kwargs["security_opt"] == ["no-new-privileges"]
    assert kwargs["init"] is True


def test_disk_mb_makes_the_workspace_a_tmpfs_of_that_size() -> None:
    kwargs = _spec(WorkerSpec(resources=Resources(disk_mb=256)))
    assert kwargs["tmpfs"] == {
        "/workspace": "exec,uid=1000,gid=1000,size=256m",
        "/home/worker": "exec,uid=1000,gid=1000",
        "/tmp": "exec,uid=1000,gid=1000",
    }
    assert "mounts" not in kwargs


def test_docker_in_docker_keeps_a_writable_root() -> None:
    kwargs = _spec(WorkerSpec(modules=(Module.GIT, Module.DOCKER), allow_insecure_dind=True))
    assert kwargs["read_only"] is False


def test_without_a_workdir_there_is_no_workspace_mount() -> None:
    made = worker_container_spec(
        WorkerSpec(),
        image="i",
        image_hash="h",
        slot="w-1",
        config=ManagerConfig(owner="m1", worker_workdir=None),
    )
    assert [m.target for m in made.mounts] == ["/home/worker", "/tmp"]


def test_an_anonymous_volume_beside_a_tmpfs_and_a_named_volume() -> None:
    spec = ContainerSpec(
        image="i",
        mounts=(
            Mount(target="/a", volume=True),
            Mount(target="/b"),
            Mount(target="/c", source="cache"),
        ),
    )
    kwargs = create_kwargs(spec, {})
    assert [(m["Target"], m["Type"], m["Source"]) for m in kwargs["mounts"]] == [
        ("/a", "volume", None),
        ("/c", "volume", "cache"),
    ]
    assert list(kwargs["tmpfs"]) == ["/b"]
