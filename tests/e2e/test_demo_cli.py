"""End to end: the ``codeyard`` console script runs the demo on real Redis, Postgres and
Docker, and what it reports is what the services hold afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import asyncpg
import docker
import redis


async def _fetch(dsn: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


def test_demo_runs_on_redis_postgres_and_docker(
    redis_db: str, postgres_db: str, docker_client: docker.DockerClient
) -> None:
    script = shutil.which("codeyard", path=str(Path(sys.executable).parent))
    assert script, "the codeyard console script is installed in the venv"
    env = {
        **os.environ,
        "COLUMNS": "250",
        "CODEYARD_BACKENDS__EVENT_BUS": "redis",
        "CODEYARD_BACKENDS__QUEUE": "postgres",
        "CODEYARD_BACKENDS__REGISTRY": "postgres",
        "CODEYARD_REDIS_URL": redis_db,
        "CODEYARD_POSTGRES_DSN": postgres_db,
    }
    done = subprocess.run(
        [script, "demo", "--runtime", "docker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "event bus: redis, queue: postgres, registry: postgres, runtime: docker" in out
    assert out.count("succeeded") == 3

    # The services hold what the demo reported: three finished jobs, three stopped workers...
    jobs = anyio.run(_fetch, postgres_db, "SELECT status, attempts FROM codeyard_jobs")
    workers = anyio.run(_fetch, postgres_db, "SELECT worker_id, status FROM codeyard_workers")
    assert sorted((j["status"], j["attempts"]) for j in jobs) == [("succeeded", 1)] * 3
    assert [w["status"] for w in workers] == ["stopped"] * 3

    # ...and one output stream per worker that handled a job, ending in a result event.
    client = redis.Redis.from_url(redis_db, decode_responses=True)
    try:
        streams = sorted(str(k) for k in client.scan_iter(match="worker:*:output"))
        handled = {s.split(":")[1] for s in streams}
        assert handled <= {str(w["worker_id"]) for w in workers}
        results = 0
        for stream in streams:
            entries = client.xrange(stream)
            assert isinstance(entries, list)
            events = [str((fields or {})["event"]) for _, fields in entries]
            assert '"type":"result"' in events[-1]
            results += sum('"type":"result"' in e for e in events)
        assert results == 3, "exactly one result event per job"
    finally:
        client.close()
