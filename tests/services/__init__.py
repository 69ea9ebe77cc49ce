"""Ephemeral real services for tests: Redis, PostgreSQL, Docker and a tiny local test image.

Pure test support code; the pytest fixtures in ``tests/conftest.py`` wrap these helpers.
Everything the tests use is re-exported here (``from tests import services``).

The one rule (see :func:`service_unavailable`): a test that needs a service never silently
skips in CI. With ``CI`` set to a truthy value a missing service *fails* the test with a
message saying what is missing and how to fix it; outside CI it skips with the same message.
"""

from __future__ import annotations

from tests.services.common import (
    SETUP_HINT,
    ServiceStartError,
    ci_enabled,
    free_port,
    service_unavailable,
    unique_name,
)
from tests.services.docker import (
    BUILD_TEST_IMAGE_SCRIPT,
    REPO_ROOT,
    TEST_IMAGE_TAG,
    docker_client,
    ensure_test_image,
)
from tests.services.pg_admin import AdminConnection
from tests.services.postgres import PostgresServer, find_postgres_bindir, start_postgres
from tests.services.redis import RedisServer, find_redis_server, start_redis

__all__ = [
    "BUILD_TEST_IMAGE_SCRIPT",
    "REPO_ROOT",
    "SETUP_HINT",
    "TEST_IMAGE_TAG",
    "AdminConnection",
    "PostgresServer",
    "RedisServer",
    "ServiceStartError",
    "ci_enabled",
    "docker_client",
    "ensure_test_image",
    "find_postgres_bindir",
    "find_redis_server",
    "free_port",
    "service_unavailable",
    "start_postgres",
    "start_redis",
    "unique_name",
]
