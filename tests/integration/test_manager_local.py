"""The worker manager end to end on the local-process runtime (see manager_local_support):
create with a prompt -> the real Claude CLI runs -> ordered events -> result -> delete;
deaths reported on the output stream; quotas; warm pool; restart adoption."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from codeyard.adapters.memory.worker_registry import InMemoryWorkerRegistry
from codeyard.adapters.process.runtime import LocalProcessRuntime
from codeyard.client import WorkerEvent
from codeyard.domain.agent import ResultStatus
from codeyard.domain.container import ContainerSpec
from codeyard.domain.errors import QuotaExceeded, WorkerNotFound
from codeyard.domain.events import ResultPayload
from codeyard.domain.worker import WorkerSpec, WorkerStatus
from codeyard.testing.model_server import ModelServer, Scenario, Stall, Text
from tests.integration.manager_local_support import (
    API_KEY,
    LocalManager,
    local_config,
    local_manager,
    until,
    wait_status,
)

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def _pids_of(worker_marker: str) -> list[int]:
    """Processes whose command line holds ``worker_marker`` (the standby slot)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            is_worker = any(arg.endswith(b"codeyard-worker") for arg in argv)
            if worker_marker.encode() in argv and is_worker:
                found.append(int(entry.name))
    return found


async def test_create_with_a_prompt_runs_the_cli_streams_events_and_delete_stops_it(
    redis_db: str, tmp_path: Path
) -> None:
    scenario = Scenario(turns=[[Text("Hello from the worker.")], [Text("Second turn.")]])
    async with ModelServer(scenario) as server:
        config = local_config(redis_db, server, "local-m1")
        async with local_manager(redis_db, config, tmp_path=tmp_path) as m:
            spec = WorkerSpec(instructions="Be brief.", env={"TEAM": "a"})
            created = await m.client.create(spec, prompt="say hello", request_id="req-1")
            assert created.status is WorkerStatus.STARTING
            assert created.prompt_request_id == "req-1"
            wid = created.worker_id
            result = await m.client.wait_result(wid, request_id="req-1", timeout_s=60)
            await wait_status(m.client, wid, "running", 10)
            sent = await m.client.send(wid, "again", request_id="req-2")
            second = await m.client.wait_result(wid, request_id="req-2", timeout_s=60)
            events = [e.event async for e in _drain(m, wid)]
            deleted = await m.client.delete(wid)
            stopped = await m.client.status(wid)
            listed = await m.client.list()
            leftovers = await m.runtime.list({"dev.codeyard.owner": "local-m1"})
    assert result.status is ResultStatus.SUCCESS, result
    assert result.text == "Hello from the worker."
    assert second.text == "Second turn."
    assert second.session_id == result.session_id
    assert sent.request_id == "req-2"
    run = [e for e in events if e.run_id == "req-1"]
    assert [e.seq for e in run] == list(range(len(run)))
    assert isinstance(run[-1].payload, ResultPayload)
    assert API_KEY not in json.dumps([e.model_dump(mode="json") for e in events])
    assert (deleted.worker_id, deleted.status) == (wid, WorkerStatus.STOPPED)
    assert stopped.status is WorkerStatus.STOPPED
    assert stopped.started_at is not None  # timings: created -> running -> ended
    assert stopped.ended_at is not None
    assert stopped.created_at <= stopped.started_at <= stopped.ended_at
    assert wid not in [w.worker_id for w in listed]
    assert leftovers == []


async def _drain(m: LocalManager, worker_id: str) -> AsyncIterator[WorkerEvent]:
    with anyio.move_on_after(2):
        async for event in m.client.events(worker_id, block_s=0.2):
            yield event
            if isinstance(event.event.payload, ResultPayload) and event.event.run_id == "req-2":
                return


async def test_a_killed_worker_gets_a_failed_result_with_the_reason(
    redis_db: str, tmp_path: Path
) -> None:
    scenario = Scenario(turns=[[Text("thinking"), Stall()]])
    async with ModelServer(scenario) as server:
        config = local_config(redis_db, server, "local-m2")
        async with local_manager(redis_db, config, tmp_path=tmp_path) as m:
            created = await m.client.create(WorkerSpec(), prompt="think", request_id="long")
            wid = created.worker_id
            with anyio.fail_after(30):
                async for item in m.client.events(wid, block_s=0.2):
                    if item.event.run_id == "long":
                        break  # the run has started
            for pid in _pids_of(wid):
                os.kill(pid, signal.SIGKILL)
            result = await m.client.wait_result(wid, request_id="long", timeout_s=30)
            await wait_status(m.client, wid, "failed", 10)
            record = await m.client.status(wid)
    assert result.status is ResultStatus.ERROR
    assert result.terminal_reason == "container_killed"
    assert record.error == "container_killed"


async def test_quota_queues_creates_then_refuses(redis_db: str, tmp_path: Path) -> None:
    async with ModelServer(Scenario.text("ok")) as server:
        config = local_config(redis_db, server, "local-m3", max_workers=1, create_timeout_s=0.5)
        async with local_manager(redis_db, config, tmp_path=tmp_path) as m:
            first = await m.client.create(WorkerSpec())
            with pytest.raises(QuotaExceeded):
                await m.client.create(WorkerSpec())
            await m.client.delete(first.worker_id)
            again = await m.client.create(WorkerSpec())  # the slot is free again
            with pytest.raises(WorkerNotFound):
                await m.client.status("w-nobody")
    assert again.worker_id != first.worker_id


async def test_warm_pool_claim_skips_the_cold_start(redis_db: str, tmp_path: Path) -> None:
    async with ModelServer(Scenario.text("warm answer")) as server:
        config = local_config(
            redis_db, server, "local-m4", warm_pool_size=1,
            warm_pool_templates=(WorkerSpec(),),
        )  # fmt: skip
        async with local_manager(redis_db, config, tmp_path=tmp_path) as m:
            await until(lambda: m.manager.pool.size() == 1, 20)
            created = await m.client.create(WorkerSpec(), prompt="hi", request_id="warm-1")
            wid = created.worker_id
            result = await m.client.wait_result(wid, request_id="warm-1", timeout_s=60)
            await until(lambda: m.manager.pool.size() == 1, 20)  # refilled in the background
    assert created.warm
    assert result.text == "warm answer"


async def test_a_restarted_manager_adopts_live_workers_and_removes_orphans(
    redis_db: str, tmp_path: Path
) -> None:
    registry = InMemoryWorkerRegistry()
    runtime = LocalProcessRuntime(owner="local-m5", base_dir=str(tmp_path))
    async with ModelServer(Scenario(turns=[[Text("one")], [Text("two")]])) as server:
        config = local_config(redis_db, server, "local-m5")
        async with local_manager(
            redis_db, config, tmp_path=tmp_path, registry=registry, runtime=runtime,
            remove_workers=False,
        ) as m:  # fmt: skip
            created = await m.client.create(WorkerSpec(), prompt="one", request_id="r1")
            await m.client.wait_result(created.worker_id, request_id="r1", timeout_s=60)
        # The manager is gone, the worker still runs; an orphan appears meanwhile.
        orphan = await runtime.create(
            ContainerSpec(image="local", command=("sleep", "60"), labels={"x": "orphan"})
        )
        async with local_manager(
            redis_db, config, tmp_path=tmp_path, registry=registry, runtime=runtime
        ) as m:
            assert created.worker_id in m.manager.watcher.watched()
            await m.client.send(created.worker_id, "two", request_id="r2")
            result = await m.client.wait_result(created.worker_id, request_id="r2", timeout_s=60)
            remaining = [c.id for c in await runtime.list()]
    assert result.text == "two"
    assert orphan.id not in remaining
