"""Observability end to end: the metrics of a manager running the real Claude CLI (local
processes, real Redis, the scripted model server), scraped over HTTP; and ``codeyard serve``
as a subprocess logging JSON lines, with metrics on a free port and a password-protected
Redis whose password never shows up in its output."""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import pytest
import redis

from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.app.observability.metrics import serve_metrics
from codeyard.client import CodeyardClient
from codeyard.domain.agent import ResultStatus
from codeyard.domain.worker import WorkerSpec
from codeyard.testing.model_server import ModelServer, Scenario, Text
from tests.integration.manager_local_support import local_config, local_manager, wait_status

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.redis]

CODEYARD = str(Path(sys.executable).with_name("codeyard"))
PASSWORD = "k2-s3cret-redis-pw"


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus exposition ``text`` (labels must all match)."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    return None


async def scrape(port: int) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    response.raise_for_status()
    return response.text


async def test_metrics_of_a_manager_running_the_claude_cli(redis_db: str, tmp_path: Path) -> None:
    scenario = Scenario(turns=[[Text("Hello from the metered worker.")]])
    async with ModelServer(scenario) as server:
        config = local_config(redis_db, server, "metrics-m1")
        async with (
            local_manager(redis_db, config, tmp_path=tmp_path) as m,
            anyio.create_task_group() as tg,
        ):
            port = await tg.start(serve_metrics, m.manager.metrics, 0)
            created = await m.client.create(WorkerSpec(), prompt="say hello", request_id="q1")
            result = await m.client.wait_result(created.worker_id, request_id="q1", timeout_s=60)
            await wait_status(m.client, created.worker_id, "running", 10)
            text = await scrape(port)
            tg.cancel_scope.cancel()
    assert result.status is ResultStatus.SUCCESS, result
    assert sample(text, "codeyard_workers", state="running") == 1
    assert sample(text, "codeyard_worker_spawn_seconds_count", path="cold") == 1
    spawn_s = sample(text, "codeyard_worker_spawn_seconds_sum", path="cold")
    assert spawn_s is not None
    assert spawn_s > 0
    assert (sample(text, "codeyard_worker_events_total", type="message") or 0) > 0
    assert sample(text, "codeyard_worker_events_total", type="result") == 1
    assert sample(text, "codeyard_agent_results_total", provider="claude", status="success") == 1
    cost = sample(text, "codeyard_agent_cost_usd_total", provider="claude")
    assert cost is not None
    assert cost > 0
    assert cost == pytest.approx(result.cost_usd)
    assert sample(text, "codeyard_image_cache_requests_total", result="build") == 1


@asynccontextmanager
async def redis_user(redis_url: str) -> AsyncIterator[str]:
    """``redis_url`` as a fresh ACL user with a password (removed afterwards)."""
    user = f"k2-{uuid.uuid4().hex[:8]}"
    admin = redis.Redis.from_url(redis_url)
    try:
        admin.acl_setuser(
            user,
            enabled=True,
            passwords=[f"+{PASSWORD}"],
            keys=["*"],
            channels=["*"],
            commands=["+@all"],
        )
        parts = urlsplit(redis_url)
        netloc = f"{user}:{PASSWORD}@{parts.hostname}:{parts.port}"
        yield urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    finally:
        admin.acl_deluser(user)
        admin.close()


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` parsed as one JSON object (fails on any other line)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def until_logged(log: Path, process: Any, check: Any, deadline_s: float) -> dict[str, Any]:
    with anyio.fail_after(deadline_s):
        while True:
            text = await anyio.Path(log).read_text()
            for line in json_lines(text):
                if check(line):
                    return line
            if process.returncode is not None:
                pytest.fail(f"codeyard serve exited {process.returncode}: {text}")
            await anyio.sleep(0.05)


async def test_serve_logs_json_lines_without_the_redis_password(
    redis_db: str, tmp_path: Path
) -> None:
    owner = f"k2-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "serve.log"
    async with redis_user(redis_db) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CODEYARD_")}
        env.update(
            {
                "CODEYARD_BACKENDS__EVENT_BUS": "redis",
                "CODEYARD_BACKENDS__RUNTIME": "memory",
                "CODEYARD_REDIS_URL": url,
                "CODEYARD_OWNER": owner,
                "CODEYARD_LOG_JSON": "true",
                "CODEYARD_MANAGER__METRICS_PORT": "0",
            }
        )
        bus = RedisEventBus.from_url(url)
        with log.open("wb") as sink:
            process = await anyio.open_process(
                [CODEYARD, "serve"], env=env, stdout=sink, stderr=sink, stdin=None
            )
        try:
            serving = await until_logged(
                log, process, lambda e: e.get("event") == "metrics serving", 30
            )
            await until_logged(log, process, lambda e: e["event"] == "worker manager serving", 30)
            client = CodeyardClient(bus)
            created = await client.create(WorkerSpec(), request_id="k2-create")
            text = await scrape(int(serving["port"]))
            named = await until_logged(log, process, lambda e: e["event"] == "worker created", 10)
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.terminate()
                    with anyio.move_on_after(15):
                        await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await bus.aclose()
    output = await anyio.Path(log).read_text()
    lines = json_lines(output)  # every line parses: nothing but JSON objects
    assert process.returncode == 0, output
    assert PASSWORD not in output
    assert all({"timestamp", "level", "logger", "event"} <= line.keys() for line in lines)
    assert (named["worker_id"], named["request_id"]) == (created.worker_id, "k2-create")
    assert sample(text, "codeyard_commands_total", type="create", outcome="ok") == 1
    assert sample(text, "codeyard_queue_depth", queue="tasks") == 0
    assert sample(text, "codeyard_workers", state="starting") is not None
