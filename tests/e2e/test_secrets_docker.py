"""Issue #9, secrets, on the real thing: ``codeyard secrets set`` puts a canary into the
encrypted store, ``codeyard serve`` (Docker, Redis, Postgres) creates a worker whose spec
references it, and the real Claude CLI (scripted model) runs a tool that prints it and
hashes it into a file. The tool saw it; it is in no event, no log (the manager's, ``docker
logs``), no image layer or label, no container label, nowhere in Redis (every key, every
entry) or Postgres. The prompt names it too, as ``{{secret:CANARY_VALUE}}``: the model gets
the value, while ``worker:commands`` and the input stream only ever hold the reference (and
the worker deletes the input entry once handled). A reference to a secret the worker lacks
fails that run by name, and the worker goes on."""

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

#: The prompt's reference to the canary (its ``SecretRef.env``).
PROMPT_REF = "{{secret:" + SECRET_ENV + "}}"

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
                canary_spec(), prompt=f"Run the tool for {PROMPT_REF}.", request_id="sec-1"
            )
            wid = created.worker_id
            result = await client.wait_result(wid, request_id="sec-1", timeout_s=180)
            # Refused in the worker before the CLI runs: no model turn, a second at most.
            await client.send(wid, "And {{secret:NOT_GIVEN}}?", request_id="sec-2")
            unknown = await client.wait_result(wid, request_id="sec-2", timeout_s=60)
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
    assert unknown.status is ResultStatus.ERROR, unknown
    assert unknown.terminal_reason == "unknown_prompt_secret"
    assert "NOT_GIVEN" in (unknown.error or "")
    # The model got the prompt with the value filled in (the provider sees prompts).
    first = server.model_requests()[0].raw_body.decode(errors="replace")
    assert f"Run the tool for {canary}." in first
    # The tool saw the secret (its hash), and its output went out redacted.
    assert isinstance(seen.output, bytes)
    assert seen.exit_code == 0, seen.output
    assert seen.output.decode().strip() == canary_hash(canary)
    output = redis_after[worker_output_stream(wid)]
    assert f"{SAID}[REDACTED]" in output
    assert canary not in output
    # Redis: no key at all, the commands and the input stream included (they hold the
    # reference only, and handled input entries are deleted); Postgres not at all.
    assert COMMANDS_STREAM in redis_after  # the scan did cover it (trimmed or not)
    assert json.loads(redis_after[worker_input_stream(wid)]) == []
    assert holding(redis_after, canary) == []
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
    assert_only_in_the_container_env(inspected, canary)


def assert_only_in_the_container_env(inspected: dict[str, Any], canary: str) -> None:
    """The container's env is where it lives (docker inspect shows it to the engine's
    admins, who own the workers anyway), and nowhere else in the container's config."""
    env_vars = dict(item.split("=", 1) for item in inspected["Config"]["Env"])
    assert env_vars[SECRET_ENV] == canary
    assert env_vars["CODEYARD_SECRET_ENV"] == SECRET_ENV
    rest = {**inspected, "Config": {**inspected["Config"], "Env": []}}
    assert canary not in json.dumps(rest)
