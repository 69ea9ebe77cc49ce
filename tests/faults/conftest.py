"""Fixtures shared by the fault tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import services


@pytest.fixture
def durable_redis() -> Iterator[services.RedisServer]:
    """A private redis-server of this test alone (AOF, so a SIGKILL loses nothing
    acknowledged), to kill and restart on its own port without disturbing the others."""
    binary = services.find_redis_server()
    if binary is None:
        services.service_unavailable("Redis", "the redis-server binary is not installed")
    try:
        server = services.start_redis(binary, durable=True)
    except services.ServiceStartError as exc:
        services.service_unavailable("durable Redis", str(exc))
    try:
        yield server
    finally:
        server.stop()
