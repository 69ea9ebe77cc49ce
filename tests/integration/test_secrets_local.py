"""Issue #9, secrets, on the local-process runtime (real Redis, the real Claude CLI against
the scripted model server): a canary secret from the credential store reaches the worker's
tool, and nothing else. The Docker variant (images, labels, ``docker logs``) is in
tests/e2e/test_secrets_docker.py."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest

from codeyard.adapters.memory.credential_store import InMemoryCredentialStore
from codeyard.adapters.secrets_file import FernetCredentialStore, generate_key
from codeyard.app.observability.logging import configure_logging, reset_logging
from codeyard.domain.agent import ResultStatus
from codeyard.domain.errors import InvalidRequest, SecretNotFound
from codeyard.domain.secrets import SECRET_ENV_VAR
from codeyard.domain.streams import COMMANDS_STREAM, worker_output_stream
from codeyard.domain.worker import SecretRef, WorkerSpec, WorkerStatus
from codeyard.testing.model_server import ModelServer
from tests.integration.manager_local_support import local_config, local_manager
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

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_a_canary_secret_reaches_the_tool_and_nothing_else(
    redis_db: str, tmp_path: Path
) -> None:
    canary = new_canary()
    store = FernetCredentialStore(tmp_path / "secrets.fernet", generate_key())
    await store.put(SECRET_NAME, canary)
    manager_log = io.StringIO()
    configure_logging("DEBUG", json=True, stream=manager_log)
    try:
        async with ModelServer(canary_scenario()) as server:
            config = local_config(redis_db, server, "local-sec")
            # The worker logs all it can: more lines the canary could leak into.
            config = replace(
                config, worker_env={**config.worker_env, "CODEYARD_LOG_LEVEL": "DEBUG"}
            )
            async with local_manager(redis_db, config, tmp_path=tmp_path, credentials=store) as m:
                # The prompt names the secret; only the worker fills the value in.
                prompt = "Use {{secret:" + SECRET_ENV + "}} and run the tool."
                created = await m.client.create(canary_spec(), prompt=prompt, request_id="r1")
                wid = created.worker_id
                result = await m.client.wait_result(wid, request_id="r1", timeout_s=90)
                record = await m.manager.app.registry.get(wid)
                assert record is not None
                assert record.container_id
                container_id = record.container_id
                worker_log = await m.runtime.logs(container_id)
                infos = await m.runtime.list()
                env = m.runtime._get(container_id).spec.env
                dump = await redis_dump(redis_db)
                # Before the delete: the local runtime removes the workspace with the box.
                hashes = [p.read_text().strip() for p in tmp_path.rglob(HASH_FILE)]  # noqa: ASYNC240
                await m.client.delete(wid)
    finally:
        reset_logging()
    assert result.status is ResultStatus.SUCCESS, result
    # The container got it, with the list of secret names, and the tool saw it.
    assert env[SECRET_ENV] == canary
    assert env[SECRET_ENV_VAR] == SECRET_ENV
    assert hashes == [canary_hash(canary)]
    # It is in no output event: the tool's output went out redacted.
    output = dump[worker_output_stream(wid)]
    assert canary not in output
    assert f"{SAID}[REDACTED]" in output
    # Nowhere in Redis: the create command and the worker's input hold only the reference.
    assert holding(dump, canary) == []
    assert "{{secret:" + SECRET_ENV + "}}" in dump[COMMANDS_STREAM]
    # Not in the registry record, labels, the manager's log or the worker's log.
    assert canary not in record.model_dump_json()
    assert all(canary not in str(info.labels) for info in infos)
    assert canary not in manager_log.getvalue()
    assert "worker created" in manager_log.getvalue()  # the log was captured
    assert canary not in worker_log
    assert worker_log  # the worker logged something


async def test_secret_refs_are_refused_without_a_store_and_a_missing_secret_fails_the_create(
    redis_db: str, tmp_path: Path
) -> None:
    spec = WorkerSpec(secrets=(SecretRef(name="absent", env="ABSENT"),))
    async with ModelServer(canary_scenario()) as server:
        config = local_config(redis_db, server, "local-sec2")
        async with local_manager(redis_db, config, tmp_path=tmp_path) as m:
            with pytest.raises(InvalidRequest, match="credential store"):
                await m.client.create(spec, request_id="r-no-store")
        store = InMemoryCredentialStore()
        async with local_manager(redis_db, config, tmp_path=tmp_path, credentials=store) as m:
            with pytest.raises(SecretNotFound):
                await m.client.create(spec, worker_id="w-absent", request_id="r-absent")
            failed = await m.client.status("w-absent")
            leftovers = await m.runtime.list()
            bad = WorkerSpec(secrets=(SecretRef(name="x", env="CODEYARD_REDIS_URL"),))
            with pytest.raises(InvalidRequest, match="variable the worker uses"):
                await m.client.create(bad, request_id="r-reserved")
    assert failed.status is WorkerStatus.FAILED
    assert leftovers == []
