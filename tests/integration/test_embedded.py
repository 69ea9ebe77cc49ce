"""The embedded service: a private Redis and an in-process manager on the local Docker
engine; a worker runs the real Claude CLI against the scripted model; nothing outlives it."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import docker
import pytest
import redis

from codeyard.app.embedded import open_embedded
from codeyard.app.settings import Settings
from codeyard.domain.agent import ResultStatus
from codeyard.domain.container import LABEL_OWNER
from codeyard.domain.worker import WorkerSpec
from codeyard.testing.model_server import ModelServer, Scenario
from tests.integration.manager_support import claude_worker_image  # noqa: F401 - fixture

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.usefixtures("claude_worker_image"),
]


async def test_an_embedded_run_needs_no_service_and_leaves_nothing(
    docker_client: docker.DockerClient,
) -> None:
    async with ModelServer(Scenario.text("embedded answer"), host="0.0.0.0") as model:
        port = model.base_url.rsplit(":", 1)[1]
        async with open_embedded(
            Settings(), agent_base_url=f"http://127.0.0.1:{port}", agent_api_key="sk-embedded"
        ) as service:
            owner = service.settings.owner
            redis_url = service.redis_url
            kept = await service.client.create(WorkerSpec())  # left for the cleanup
            result = await service.client.run(WorkerSpec(), "answer please", timeout_s=300)
            running = docker_client.containers.list(filters={"label": f"{LABEL_OWNER}={owner}"})
            for container in running:
                container.reload()  # a listed container's attrs lack Config.Env
            envs = [c.attrs["Config"]["Env"] for c in running]
    assert result.status is ResultStatus.SUCCESS, result
    assert result.text == "embedded answer"
    assert [c.labels.get("dev.codeyard.worker-id") for c in running] == [kept.worker_id]
    # The worker logs in to the private Redis as its own ACL user, not with its password.
    password = urlsplit(redis_url).password
    assert password
    assert password not in str(envs)
    assert f"CODEYARD_REDIS_URL=redis://codeyard-worker%3A{owner}%3A" in str(envs)
    left = docker_client.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"})
    assert left == []  # the worker kept alive was removed with the service
    assert owner.endswith(f"-run-{os.getpid()}")  # unique per process
    with pytest.raises(redis.ConnectionError):  # the private Redis is gone too
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()
