"""The multi-host test services work: a Redis containers reach, a second Docker engine.

These guard the fixtures in tests/conftest.py (``worker_redis``, ``worker_redis_db``,
``second_docker_engine``) and ``copy_image`` from tests/services/second_engine.py.
"""

from __future__ import annotations

import subprocess
import time

import docker
import pytest
import redis

from tests import services
from tests.services.second_engine import SecondEngine, copy_image, find_dockerd, start_second_engine
from tests.services.worker_redis import WorkerRedis, WorkerRedisServer

_HOST_GATEWAY = {"host.docker.internal": "host-gateway"}


def _redis_set_from_container(
    client: docker.DockerClient, image: str, endpoint: WorkerRedis, key: str, value: str
) -> str:
    """Run a container that AUTHs, SELECTs and SETs over raw RESP with busybox ``nc``."""
    script = (
        f'printf "AUTH {endpoint.password}\\r\\nSELECT {endpoint.db}\\r\\n'
        f'SET {key} {value}\\r\\nQUIT\\r\\n" | nc -w 5 host.docker.internal {endpoint.port}'
    )
    output: bytes = client.containers.run(
        image, ["sh", "-c", script], extra_hosts=_HOST_GATEWAY, remove=True
    )
    return output.decode()


def _get(endpoint: WorkerRedis, key: str) -> bytes | None:
    client = redis.Redis.from_url(endpoint.url)
    try:
        value = client.get(key)
        assert value is None or isinstance(value, bytes)
        return value
    finally:
        client.close()


def test_worker_redis_requires_the_password(worker_redis: WorkerRedis) -> None:
    url = f"redis://127.0.0.1:{worker_redis.port}/0"
    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            client.ping()
    finally:
        client.close()
    assert worker_redis.container_url("h") == (
        f"redis://:{worker_redis.password}@h:{worker_redis.port}/0"
    )


def test_next_db_gives_distinct_flushed_databases(
    worker_redis_server: WorkerRedisServer,
) -> None:
    first = worker_redis_server.next_db()
    client = redis.Redis.from_url(first.url)
    try:
        client.set("leak", "1")
    finally:
        client.close()
    second = worker_redis_server.next_db()
    assert second.db != first.db
    assert _get(second, "leak") is None
    assert _get(first, "leak") == b"1"  # next_db flushes only the database it hands out


def test_worker_redis_db_starts_empty(worker_redis_db: WorkerRedis) -> None:
    client = redis.Redis.from_url(worker_redis_db.url)
    try:
        assert client.dbsize() == 0
        client.set("written-by-test", "1")
    finally:
        client.close()


def test_worker_redis_db_next_test_gets_another_empty_db(worker_redis_db: WorkerRedis) -> None:
    client = redis.Redis.from_url(worker_redis_db.url)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()


def test_container_on_default_bridge_reaches_worker_redis(
    docker_client: docker.DockerClient, test_image: str, worker_redis_db: WorkerRedis
) -> None:
    output = _redis_set_from_container(docker_client, test_image, worker_redis_db, "k1", "v1")
    assert output.count("+OK") == 4, output  # AUTH, SELECT, SET, QUIT
    assert _get(worker_redis_db, "k1") == b"v1"


def test_second_engine_runs_copied_image_and_first_engine_still_works(
    docker_client: docker.DockerClient,
    test_image: str,
    second_docker_engine: SecondEngine,
    worker_redis_db: WorkerRedis,
) -> None:
    engine2 = second_docker_engine.client
    began = time.monotonic()
    copy_image(docker_client, engine2, test_image)
    copied_in = time.monotonic() - began
    assert engine2.images.get(test_image).id == docker_client.images.get(test_image).id
    assert copied_in < 30

    # Engine 2: its container sits on engine 2's own bridge and reaches the host's Redis.
    ip_out = engine2.containers.run(
        test_image, ["sh", "-c", "ip -4 -o addr show eth0"], remove=True
    ).decode()
    assert f" {second_docker_engine.gateway.rsplit('.', 1)[0]}." in ip_out, ip_out
    out2 = _redis_set_from_container(engine2, test_image, worker_redis_db, "from2", "e2")
    assert _get(worker_redis_db, "from2") == b"e2", out2

    # Engine 1 after engine 2 started: docker0 intact, default bridge still routes to host.
    link = subprocess.run(["ip", "link", "show", "docker0"], capture_output=True, check=False)
    assert link.returncode == 0, "docker0 of the first engine is gone"
    out1 = _redis_set_from_container(docker_client, test_image, worker_redis_db, "from1", "e1")
    assert _get(worker_redis_db, "from1") == b"e1", out1


def test_second_engine_start_kept_first_engine_isolation_rules(
    second_docker_engine: SecondEngine,
) -> None:
    # A starting dockerd flushes the shared DOCKER-ISOLATION chains; the fixture puts the
    # first engine's rules back. docker0 must still be isolated from other bridges.
    rules = subprocess.run(
        ["iptables", "-w", "-S", "DOCKER-ISOLATION-STAGE-2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP" in rules
    assert f"-A DOCKER-ISOLATION-STAGE-2 -o {second_docker_engine.bridge} -j DROP" in rules


def test_second_engine_start_keeps_first_engine_published_ports(
    docker_client: docker.DockerClient, test_image: str
) -> None:
    # Started here, not through the session fixture: the first engine must already publish
    # a port when the second daemon starts (and flushes the shared nat DOCKER chain).
    binary = find_dockerd()
    if binary is None:
        services.service_unavailable("second Docker engine", "the dockerd binary is missing")
    container = docker_client.containers.run(
        test_image, ["sleep", "60"], detach=True, ports={"8080/tcp": None}
    )
    try:
        container.reload()
        bindings = container.ports["8080/tcp"]
        assert bindings, container.ports
        host_port = bindings[0]["HostPort"]
        engine = start_second_engine(binary)
        try:
            nat = subprocess.run(
                ["iptables", "-w", "-t", "nat", "-S", "DOCKER"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert f"--dport {host_port} -j DNAT" in nat, nat
            # The start did flush it: the fixture's restore is what kept the rule.
            assert any(
                table == "nat" and f"--dport {host_port} " in rule
                for table, rule in engine.restored_rules
            ), engine.restored_rules
        finally:
            engine.stop()
        link = subprocess.run(
            ["ip", "link", "show", engine.bridge], capture_output=True, check=False
        )
        assert link.returncode != 0, "the second engine's bridge outlived stop()"
        assert not engine.workdir.exists()
    finally:
        container.remove(force=True)
