"""Issue #9, secrets, on the real thing: ``codeyard secrets set`` puts a canary into the
encrypted store, ``codeyard serve`` (Docker, Redis, Postgres) creates a worker whose spec
references it, and the real Claude CLI (scripted model) runs a tool that prints it and
hashes it into a file. The tool saw it; it is in no event, no log (the manager's, ``docker
logs``), no image layer or label, no container label, nowhere in Redis or Postgres, except
where the client itself put it (its prompt, which holds the canary too)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import docker
import pytest

from codeyard.adapters.secrets_file import generate_key
from codeyard.client import CodeyardClient
from codeyard.domain.agent import ResultStatus
from codeyard.domain.streams import COMMANDS_STREAM, worker_input_stream, worker_output_stream
from codeyard.testing.model_server import ModelServer
from tests.e2e.serve_support import CODEYARD, remove_owned, serve_env, serving
from tests.integration.manager_support import claude_worker_image  # noqa: F401 - fixture
from tests.integration.secrets_support import (
    HASH_FILE,
    SAID,
    SECRET_ENV,
    SECRET_NAME,
    canary_hash,
    canary_scenario,
    canary_spec,
    holding,
    new_canary,
    redis_dump,
)
from tests.services.worker_redis import WorkerRedis

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.usefixtures("claude_worker_image"),
]


@dataclass
class SecretStack:
    owner: str
    env: dict[str, str]
    redis_url: str
    postgres_dsn: str
    docker: docker.DockerClient
    logs: Path
    canary: str


@pytest.fixture
def secret_stack(
    worker_redis_db: WorkerRedis,
    postgres_db: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> Iterator[SecretStack]:
    owner = "e2e-sec-" + uuid.uuid4().hex[:8]
    canary = new_canary()
    store = {
        "CODEYARD_SECRETS__KEY": generate_key(),
        "CODEYARD_SECRETS__PATH": str(tmp_path / "store" / "secrets.fernet"),
    }
    # The operator's way in: the value on stdin, never an argument.
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("CODEYARD_")}
    subprocess.run(
        [CODEYARD, "secrets", "set", SECRET_NAME],
        input=canary,
        env={**cli_env, **store},
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    yield SecretStack(
        owner, store, worker_redis_db.url, postgres_db, docker_client, tmp_path, canary
    )
    remove_owned(docker_client, owner)


async def _postgres_dump(dsn: str) -> str:
    """Every row of every table of the public schema, as text."""
    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        rows = []
        for table in tables:
            name = table["tablename"]
            for row in await conn.fetch(f'SELECT t::text AS row FROM "{name}" t'):
                rows.append(f"{name}: {row['row']}")
        return "\n".join(rows)
    finally:
        await conn.close()


async def test_a_canary_secret_reaches_the_tool_and_leaks_nowhere(
    secret_stack: SecretStack,
) -> None:
    stack, canary = secret_stack, secret_stack.canary
    async with ModelServer(canary_scenario(), host="0.0.0.0") as server:
        env = serve_env(
            owner=stack.owner,
            redis_url=stack.redis_url,
            postgres_dsn=stack.postgres_dsn,
            server=server,
            CODEYARD_LOG_LEVEL="DEBUG",
            **stack.env,
        )
        log = stack.logs / "serve.log"
        async with serving(env, log), CodeyardClient.connect(stack.redis_url) as client:
            created = await client.create(
                canary_spec(), prompt=f"Run the tool for {canary}.", request_id="sec-1"
            )
            wid = created.worker_id
            result = await client.wait_result(wid, request_id="sec-1", timeout_s=180)
            record = await client.status(wid)
            assert record.container_id is not None
            container = stack.docker.containers.get(record.container_id)
            seen = container.exec_run(["sh", "-c", f"cat {HASH_FILE}"], user="1000:1000")
            docker_logs = container.logs().decode(errors="replace")
            inspected: dict[str, Any] = container.attrs
            image = stack.docker.images.get(inspected["Image"])
            history = json.dumps(image.history())
            image_attrs = json.dumps(image.attrs)
            await client.delete(wid)
            after = await client.status(wid)
        redis_after = await redis_dump(stack.redis_url)
        postgres_after = await _postgres_dump(stack.postgres_dsn)
    manager_log = log.read_text(errors="replace")
    assert result.status is ResultStatus.SUCCESS, result
    # The tool saw the secret (its hash), and its output went out redacted.
    assert isinstance(seen.output, bytes)
    assert seen.exit_code == 0, seen.output
    assert seen.output.decode().strip() == canary_hash(canary)
    output = redis_after[worker_output_stream(wid)]
    assert f"{SAID}[REDACTED]" in output
    assert canary not in output
    # Redis: only the client's own input holds it (the prompt: the create command and
    # the worker's input stream); Postgres (queue, registry) not at all.
    assert holding(redis_after, canary) == sorted([COMMANDS_STREAM, worker_input_stream(wid)])
    assert canary not in postgres_after
    assert wid in postgres_after  # the dump did cover the registry
    assert canary not in record.model_dump_json()
    assert canary not in after.model_dump_json()
    # Logs, image layers and labels, container labels: nowhere.
    assert "worker created" in manager_log
    assert canary not in manager_log
    assert canary not in docker_logs
    assert canary not in history
    assert canary not in image_attrs
    assert canary not in json.dumps(inspected["Config"]["Labels"])
    # The container's env is where it lives (docker inspect shows it to the engine's
    # admins, who own the workers anyway), and nowhere else in the container's config.
    env_vars = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
    assert env_vars[SECRET_ENV] == canary
    assert env_vars["CODEYARD_SECRET_ENV"] == SECRET_ENV
    rest = {**inspected, "Config": {**inspected["Config"], "Env": []}}
    assert canary not in json.dumps(rest)
