"""The manager's pure parts: WorkerSpec -> container, death reasons, slots, settings."""

from __future__ import annotations

from typing import Any, cast

import anyio
import pytest
import redis.connection
from pydantic import SecretStr

from codeyard.app.manager.config import ManagerConfig
from codeyard.app.manager.launch import (
    LABEL_ROLE,
    death_reason,
    death_result,
    host_ports,
    worker_container_spec,
)
from codeyard.app.manager.settings import (
    HOST_ALIAS,
    ManagerSettings,
    container_url,
    manager_config,
)
from codeyard.app.manager.slots import Slots
from codeyard.app.settings import Settings
from codeyard.domain.agent import ResultStatus
from codeyard.domain.container import (
    LABEL_IMAGE_HASH,
    LABEL_WORKER,
    ContainerInfo,
    ContainerState,
    ExitReason,
)
from codeyard.domain.errors import InvalidInput, InvalidRequest, QuotaExceeded
from codeyard.domain.worker import Module, NetworkPolicy, SecretRef, WorkerSpec
from codeyard.domain.worker_access import WorkerLogin

CONFIG = ManagerConfig(
    owner="m1",
    worker_env={"CODEYARD_REDIS_URL": "redis://host.docker.internal:6379/0"},
    worker_args=("--base-url", "http://host.docker.internal:8080"),
    host_ports=(6379, 8080),
    extra_hosts={HOST_ALIAS: "host-gateway"},
)


def test_worker_container_runs_the_standby_wrapper_with_the_managers_env() -> None:
    spec = WorkerSpec(agent="codex", labels={"team": "a"}, modules=(Module.GIT, Module.DOCKER))
    made = worker_container_spec(
        spec, image="codeyard-worker:abc", image_hash="abc", slot="w-1", config=CONFIG
    )
    assert made.command[:5] == ("codeyard-worker", "--standby", "w-1", "--provider", "codex")
    assert made.command[-2:] == ("--base-url", "http://host.docker.internal:8080")
    assert made.env == dict(CONFIG.worker_env)
    assert made.labels == {
        "team": "a",
        LABEL_WORKER: "w-1",
        LABEL_IMAGE_HASH: "abc",
        LABEL_ROLE: "worker",
    }
    assert made.extra_hosts == {HOST_ALIAS: "host-gateway"}
    assert made.docker_in_docker
    # EGRESS still needs the event bus on the host: an allowlist of the manager's ports.
    assert made.network is NetworkPolicy.ALLOWLIST
    assert made.allowed_host_ports == (6379, 8080)


def test_allowed_hosts_add_host_ports_and_pool_slots_are_standby() -> None:
    spec = WorkerSpec(network=NetworkPolicy.ALLOWLIST, allowed_hosts=("5432", "localhost:8080"))
    made = worker_container_spec(spec, image="i", image_hash="h", slot="pool-x", config=CONFIG)
    assert made.allowed_host_ports == (5432, 6379, 8080)
    assert made.labels[LABEL_ROLE] == "standby"


@pytest.mark.parametrize("entry", ["example.com:443", "x", "host:0", "host:70000", ":"])
def test_allowed_hosts_name_host_ports_only(entry: str) -> None:
    with pytest.raises(InvalidRequest):
        host_ports((entry,))


@pytest.mark.parametrize(
    "spec",
    [
        WorkerSpec(network=NetworkPolicy.NONE),
        WorkerSpec(secrets=(SecretRef(name="gh", env="GH_TOKEN"),)),
    ],
)
def test_specs_a_manager_cannot_run_are_refused(spec: WorkerSpec) -> None:
    with pytest.raises(InvalidRequest):
        worker_container_spec(spec, image="i", image_hash="h", slot="w", config=CONFIG)


def _ended(code: int, *, oom: bool = False) -> ContainerInfo:
    reason = ExitReason.OOM if oom else ExitReason.EXITED
    return ContainerInfo(
        id="c", name="n", image="i", state=ContainerState.EXITED, exit_code=code,
        oom_killed=oom, reason=reason,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        (_ended(137, oom=True), "container_oom"),
        (_ended(143), "container_terminated"),
        (_ended(137), "container_killed"),
        (_ended(3), "container_exited_3"),
        (None, "container_vanished"),
    ],
)
def test_death_reasons_follow_the_exit_code(info: ContainerInfo | None, reason: str) -> None:
    assert death_reason(info) == reason
    result = death_result("claude", info)
    assert result.status is ResultStatus.ERROR
    assert result.terminal_reason == reason
    assert result.exit_code == (None if info is None else info.exit_code)


@pytest.mark.anyio
async def test_slots_queue_creates_and_time_out() -> None:
    slots = Slots(1)
    await slots.acquire("a", timeout_s=1)
    await slots.acquire("a", timeout_s=0.01)  # the same worker again: no second slot
    with pytest.raises(QuotaExceeded) as caught:
        await slots.acquire("b", timeout_s=0.05)
    assert caught.value.fields["max_workers"] == 1

    async def release_soon() -> None:
        await anyio.sleep(0.05)
        await slots.release("a")

    async with anyio.create_task_group() as tg:
        tg.start_soon(release_soon)
        await slots.acquire("b", timeout_s=5)  # waits in the creation queue, then gets it
    assert slots.holds("b")
    assert not slots.holds("a")


def test_loopback_services_become_the_host_alias_with_their_port() -> None:
    assert container_url("redis://:pw@127.0.0.1:6390/2", setting="S") == (
        f"redis://:pw@{HOST_ALIAS}:6390/2",
        6390,
    )
    assert container_url("http://localhost/v1", setting="S") == (f"http://{HOST_ALIAS}:80/v1", 80)
    assert container_url("https://api.example.com", setting="S") == (
        "https://api.example.com",
        None,
    )
    with pytest.raises(InvalidInput):
        container_url("unix:///run/redis.sock", setting="S")


def test_manager_config_from_settings() -> None:
    settings = Settings(
        backends={"event_bus": "redis"},
        redis_url="redis://localhost:6400/0",
        owner="host-a",
        manager={
            "agent_base_url": "http://127.0.0.1:9000",
            "agent_api_key": "sk-test",
            "warm_pool_size": 2,
        },
    )
    config = manager_config(settings)
    assert config.owner == "host-a"
    assert config.worker_env["CODEYARD_REDIS_URL"] == f"redis://{HOST_ALIAS}:6400/0"
    assert config.worker_env["AGENT_API_KEY"] == "sk-test"
    assert config.worker_args == (
        "--base-url",
        f"http://{HOST_ALIAS}:9000",
        "--api-key-env",
        "AGENT_API_KEY",
    )
    assert config.host_ports == (6400, 9000)
    assert config.warm_pool_size == 2
    assert [t.agent for t in config.warm_pool_templates] == ["claude"]
    assert "sk-test" not in str(settings.masked())


def test_with_worker_redis_acl_the_container_gets_its_own_login_not_the_managers() -> None:
    settings = Settings(
        backends={"event_bus": "redis"},
        redis_url="redis://admin:manager-secret@localhost:6400/3",
        owner="host-a",
    )
    config = manager_config(settings)
    assert config.worker_redis_acl
    assert config.worker_env["CODEYARD_REDIS_URL"] == f"redis://{HOST_ALIAS}:6400/3"
    login = WorkerLogin(username="codeyard-worker:host-a:w-1", password=SecretStr("p/w@1"))
    made = worker_container_spec(
        WorkerSpec(), image="i", image_hash="h", slot="w-1", config=config, login=login
    )
    url = made.env["CODEYARD_REDIS_URL"]
    assert url == f"redis://codeyard-worker%3Ahost-a%3Aw-1:p%2Fw%401@{HOST_ALIAS}:6400/3"
    assert "manager-secret" not in str(made.model_dump())
    # What the worker's client logs in with:
    parsed = cast(Any, redis.connection).parse_url(url)
    assert (parsed["username"], parsed["password"]) == ("codeyard-worker:host-a:w-1", "p/w@1")
    with pytest.raises(ValueError, match="own login"):
        worker_container_spec(WorkerSpec(), image="i", image_hash="h", slot="w", config=config)
    off = manager_config(
        settings.model_copy(update={"manager": ManagerSettings(worker_redis_acl=False)})
    )
    assert (
        off.worker_env["CODEYARD_REDIS_URL"] == f"redis://admin:manager-secret@{HOST_ALIAS}:6400/3"
    )
