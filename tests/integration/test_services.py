"""The service fixtures give real, working services (and never skip silently in CI)."""

from __future__ import annotations

import uuid

import asyncpg
import docker
import docker.errors
import pytest
import redis

from tests import services

# --- the CI rule ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["true", "1", "yes", "TRUE", "on"])
def test_missing_service_fails_in_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="Redis unavailable: binary missing"):
        services.service_unavailable("Redis", "binary missing")


@pytest.mark.parametrize("value", [None, "", "0", "false", "no"])
def test_missing_service_skips_outside_ci(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="Fix: run `scripts/dev setup`"):
        services.service_unavailable("Redis", "binary missing")


# --- Redis ---------------------------------------------------------------------------------


def test_redis_stream_keeps_entries_in_order(redis_db: str) -> None:
    client = redis.Redis.from_url(redis_db, decode_responses=True)
    try:
        first = client.xadd("jobs", {"task": "build", "n": "1"})
        second = client.xadd("jobs", {"task": "test", "n": "2"})

        entries = client.xrange("jobs")

        assert entries == [
            (first, {"task": "build", "n": "1"}),
            (second, {"task": "test", "n": "2"}),
        ]
        assert client.xlen("jobs") == 2
    finally:
        client.close()


def test_redis_db_starts_empty(redis_db: str) -> None:
    client = redis.Redis.from_url(redis_db)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_postgres_skip_locked_claims_different_rows(postgres_db: str) -> None:
    setup = await asyncpg.connect(postgres_db)
    worker_a = await asyncpg.connect(postgres_db)
    worker_b = await asyncpg.connect(postgres_db)
    try:
        await setup.execute("CREATE TABLE jobs (id serial PRIMARY KEY, name text NOT NULL)")
        async with setup.transaction():
            await setup.executemany(
                "INSERT INTO jobs (name) VALUES ($1)", [("one",), ("two",), ("three",)]
            )
        assert await worker_a.fetchval("SELECT count(*) FROM jobs") == 3

        claim = "SELECT id, name FROM jobs ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
        tx_a = worker_a.transaction()
        tx_b = worker_b.transaction()
        await tx_a.start()
        await tx_b.start()
        try:
            row_a = await worker_a.fetchrow(claim)
            row_b = await worker_b.fetchrow(claim)
        finally:
            await tx_a.rollback()
            await tx_b.rollback()

        assert row_a is not None
        assert row_b is not None
        assert (row_a["id"], row_a["name"]) == (1, "one")
        assert (row_b["id"], row_b["name"]) == (2, "two")
    finally:
        await setup.close()
        await worker_a.close()
        await worker_b.close()


@pytest.mark.anyio
async def test_postgres_db_is_fresh_per_test(postgres_db: str) -> None:
    conn = await asyncpg.connect(postgres_db)
    try:
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        )
        assert tables == 0
    finally:
        await conn.close()


# --- Docker --------------------------------------------------------------------------------


def test_docker_runs_labelled_container(
    docker_client: docker.DockerClient, test_image: str
) -> None:
    label = uuid.uuid4().hex
    container = docker_client.containers.run(
        test_image,
        ["echo", "hello from codeyard"],
        labels={"codeyard.test": label},
        detach=True,
    )
    try:
        status = container.wait(timeout=60)
        assert status["StatusCode"] == 0
        assert container.logs() == b"hello from codeyard\n"
        found = docker_client.containers.list(all=True, filters={"label": f"codeyard.test={label}"})
        assert [c.id for c in found] == [container.id]
    finally:
        container.remove(force=True)

    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(container.id or "")
    assert (
        docker_client.containers.list(all=True, filters={"label": f"codeyard.test={label}"}) == []
    )


def test_docker_enforces_network_none_and_memory_limit(
    docker_client: docker.DockerClient, test_image: str
) -> None:
    limit = 64 * 1024 * 1024
    container = docker_client.containers.run(
        test_image,
        ["sleep", "60"],
        network_mode="none",
        mem_limit=limit,
        memswap_limit=limit,
        labels={"codeyard.test": uuid.uuid4().hex},
        detach=True,
    )
    try:
        container.reload()
        host_config = container.attrs["HostConfig"]
        assert host_config["NetworkMode"] == "none"
        assert host_config["Memory"] == limit
        assert host_config["MemorySwap"] == limit
        assert container.attrs["State"]["Running"] is True

        # Seen from inside: only the loopback interface, and the cgroup memory limit
        # (cgroup v1 or v2 path).
        interfaces = container.exec_run(["ls", "/sys/class/net"])
        assert interfaces.exit_code == 0
        assert isinstance(interfaces.output, bytes)
        assert interfaces.output.split() == [b"lo"]
        memory = container.exec_run(
            [
                "sh",
                "-c",
                "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null"
                " || cat /sys/fs/cgroup/memory.max",
            ]
        )
        assert memory.exit_code == 0
        assert isinstance(memory.output, bytes)
        assert int(memory.output.strip()) == limit
    finally:
        container.remove(force=True)
