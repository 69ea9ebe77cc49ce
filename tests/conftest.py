"""Shared fixtures: real, ephemeral services for every test folder (unit, contract,
integration, e2e).

Service fixtures (the helpers are in the ``tests/services/`` package):

* ``redis_url`` (session): an ephemeral ``redis-server`` on a free port, no persistence;
  yields ``redis://127.0.0.1:PORT/0``.
* ``redis_db`` (function): the same URL after ``FLUSHDB``, so each test starts empty.
* ``postgres_dsn`` (session): an ephemeral PostgreSQL cluster (``initdb -A trust``, run as the
  ``postgres`` OS user when root, fsync off, on tmpfs when ``/dev/shm`` has room) with a
  database ``codeyard``; yields ``postgresql://postgres@127.0.0.1:PORT/codeyard``.
* ``postgres_db`` (function): a fresh database per test, created from an empty template
  database, dropped afterwards; yields its DSN. About 20 ms a test: both statements go
  through one admin connection kept open for the session.
* ``docker_client`` (session): ``docker.from_env(max_pool_size=32)`` after ``ping()``.
* ``test_image`` (session): the tag of the local image ``codeyard-test/busybox:latest``
  (static busybox, no registry), built by ``scripts/build-test-image`` when missing.
* ``worker_redis`` (session): a Redis reachable from containers (binds 0.0.0.0, random
  ``requirepass``); a ``WorkerRedis`` with ``url`` (host side), ``port``, ``password`` and
  ``container_url(host)``, e.g. ``container_url("host.docker.internal")`` in a container run
  with ``extra_hosts={"host.docker.internal": "host-gateway"}``.
* ``worker_redis_db`` (function): the same server on a flushed database whose index differs
  from the previous test's (cycling through 64). Both come from ``worker_redis_server``.
* ``second_docker_engine`` (session): a second dockerd on this machine (own dirs, socket,
  bridge and iptables rules); a ``SecondEngine`` with ``client`` and ``base_url``. Copy
  images into it with ``tests.services.second_engine.copy_image``.

A test using one of these fixtures gets the matching marker (``redis``, ``postgres``,
``docker``) automatically, so ``-m "not docker"`` deselects it.

When a service cannot be started: skipped on a developer machine, FAILED when ``CI`` is set
(see ``tests.services.service_unavailable``).
"""

from __future__ import annotations

from collections.abc import Iterator

import docker
import docker.errors
import pytest
import redis

from tests import services
from tests.services.second_engine import SecondEngine, find_dockerd, start_second_engine
from tests.services.worker_redis import WorkerRedis, WorkerRedisServer, start_worker_redis

# Fixture name -> marker applied to every test that uses it (directly or indirectly).
_SERVICE_MARKERS = {
    "redis_url": "redis",
    "redis_db": "redis",
    "postgres_dsn": "postgres",
    "postgres_db": "postgres",
    "postgres_server": "postgres",
    "docker_client": "docker",
    "test_image": "docker",
    "worker_redis_server": "redis",
    "worker_redis": "redis",
    "worker_redis_db": "redis",
    "second_docker_engine": "docker",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixturenames: list[str] = getattr(item, "fixturenames", [])
        for marker in sorted({_SERVICE_MARKERS[f] for f in fixturenames if f in _SERVICE_MARKERS}):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# --- Redis ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    binary = services.find_redis_server()
    if binary is None:
        services.service_unavailable("Redis", "the redis-server binary is not installed")
    try:
        server = services.start_redis(binary)
    except services.ServiceStartError as exc:
        services.service_unavailable("Redis", str(exc))
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_db(redis_url: str) -> str:
    """``redis_url`` with an empty database: FLUSHDB before the test."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_url


# --- PostgreSQL ----------------------------------------------------------------------------

_PG_DATABASE = "codeyard"
_PG_TEMPLATE = "codeyard_template"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[services.PostgresServer]:
    bindir = services.find_postgres_bindir()
    if bindir is None:
        services.service_unavailable(
            "PostgreSQL", "no initdb found (/usr/lib/postgresql/*/bin or PATH)"
        )
    try:
        server = services.start_postgres(bindir)
        # The template is never connected to, so CREATE DATABASE ... TEMPLATE always works.
        server.create_database(_PG_TEMPLATE)
        server.create_database(_PG_DATABASE)
    except services.ServiceStartError as exc:
        services.service_unavailable("PostgreSQL", str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: services.PostgresServer) -> str:
    return postgres_server.dsn(_PG_DATABASE)


@pytest.fixture
def postgres_db(postgres_server: services.PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test; dropped (with its connections) afterwards."""
    name = services.unique_name("test")
    postgres_server.create_database(name, template=_PG_TEMPLATE)
    try:
        yield postgres_server.dsn(name)
    finally:
        postgres_server.drop_database(name)


# --- Docker --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = services.docker_client()
    except docker.errors.DockerException as exc:
        services.service_unavailable("Docker", f"the engine does not answer ({exc})")
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def test_image(docker_client: docker.DockerClient) -> str:
    try:
        return services.ensure_test_image(docker_client)
    except (services.ServiceStartError, docker.errors.DockerException) as exc:
        services.service_unavailable(f"Docker test image {services.TEST_IMAGE_TAG}", str(exc))


# --- Multi-host: a Redis reachable from containers, a second Docker engine -----------------


@pytest.fixture(scope="session")
def worker_redis_server() -> Iterator[WorkerRedisServer]:
    binary = services.find_redis_server()
    if binary is None:
        services.service_unavailable("Redis", "the redis-server binary is not installed")
    try:
        server = start_worker_redis(binary)
    except services.ServiceStartError as exc:
        services.service_unavailable("worker Redis", str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def worker_redis(
    worker_redis_server: WorkerRedisServer,
) -> WorkerRedis:
    """Redis on 0.0.0.0 with a password, database 0 (not flushed between tests)."""
    return worker_redis_server.endpoint


@pytest.fixture
def worker_redis_db(
    worker_redis_server: WorkerRedisServer,
) -> WorkerRedis:
    """``worker_redis`` on a flushed database index that differs from the previous test's."""
    return worker_redis_server.next_db()


@pytest.fixture(scope="session")
def second_docker_engine() -> Iterator[SecondEngine]:
    binary = find_dockerd()
    if binary is None:
        services.service_unavailable("second Docker engine", "the dockerd binary is missing")
    try:
        engine = start_second_engine(binary)
    except (services.ServiceStartError, docker.errors.DockerException, OSError) as exc:
        services.service_unavailable("second Docker engine", str(exc))
    try:
        yield engine
    finally:
        engine.stop()
