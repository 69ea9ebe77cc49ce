"""A worker process rides out a Redis restart (issue #9): ``codeyard worker`` as a
subprocess with the REAL Claude Code CLI and the scripted model server, on a private,
durable Redis (AOF, fsync always) that is SIGKILLed and started again on the same port.
What it acknowledged survives, so a lost or doubled event is the worker's fault.

(a) an idle worker answers a prompt sent after a 3 s outage; (b) a run cut by the
outage (model slowed with ``Delay``) goes on, and all its events and its one result arrive
exactly once, its input entry ACKed and deleted only then; (c) a standby worker waiting
for its assignment takes one published after the outage; (d) past
``CODEYARD_WORKER_REDIS_OUTAGE_S`` the worker exits 3 with one clear log line.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.abc
import pytest

from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.domain.agent import ResultStatus
from codeyard.domain.events import AgentEvent, ResultPayload, ToolResultPayload
from codeyard.domain.streams import parse_stream_id, worker_input_stream, worker_output_stream
from codeyard.domain.worker_io import EVENT_FIELD, INPUT_FIELD
from codeyard.testing.model_server import Delay, ModelServer, Scenario, Text
from codeyard.testing.model_server.tools import TOOLS
from tests import services
from tests.integration.test_worker_standby_cli import Manager, standby_worker
from tests.integration.test_worker_wrapper_cli import claude_binary

pytestmark = [pytest.mark.anyio, pytest.mark.faults, pytest.mark.redis, pytest.mark.slow]

WORKER = "w-outage-1"
KEY_ENV = "CODEYARD_TEST_WORKER_API_KEY"
DOWN_S = 3.0


class Worker:
    def __init__(self, bus: RedisEventBus, process: anyio.abc.Process, log: Path) -> None:
        self.bus, self.process, self.log = bus, process, log

    async def send(self, message: dict[str, object], worker_id: str = WORKER) -> None:
        fields = {INPUT_FIELD: json.dumps(message)}
        await self.bus.publish(worker_input_stream(worker_id), fields)

    async def entries(self, worker_id: str = WORKER) -> list[tuple[str, AgentEvent]]:
        found = await self.bus.read(worker_output_stream(worker_id), count=10_000)
        return [(e.id, AgentEvent.model_validate_json(e.fields[EVENT_FIELD])) for e in found]

    async def wait_for_result(
        self, run_id: str, worker_id: str = WORKER, deadline_s: float = 60.0
    ) -> list[tuple[str, AgentEvent]]:
        with anyio.fail_after(deadline_s):
            while True:
                entries = await self.entries(worker_id)
                if any(e.run_id == run_id and e.is_terminal for _, e in entries):
                    return entries
                if self.process.returncode is not None:
                    pytest.fail(f"the worker exited {self.process.returncode}: {self.logs()}")
                await anyio.sleep(0.05)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.asynccontextmanager
async def worker(
    redis: services.RedisServer, server: ModelServer, tmp_path: Path, **env: str
) -> AsyncIterator[Worker]:
    """``codeyard worker --worker-id WORKER``, returned once it said ``ready``."""
    argv = [
        str(Path(sys.executable).with_name("codeyard")),
        *("worker", "--worker-id", WORKER, "--provider", "claude"),
        *("--workdir", str(tmp_path / "work"), "--home", str(tmp_path / "home")),
        *("--heartbeat-s", "0.5", "--agent-binary", str(claude_binary())),
        *("--base-url", server.base_url, "--api-key-env", KEY_ENV),
    ]
    full_env = {
        **os.environ,
        "CODEYARD_BACKENDS__EVENT_BUS": "redis",
        "CODEYARD_REDIS_URL": redis.url,
        KEY_ENV: "sk-ant-codeyard-outage-5e1b",
        **env,
    }
    log = tmp_path / "worker.log"
    bus = RedisEventBus.from_url(redis.url)
    with log.open("wb") as sink:
        process = await anyio.open_process(argv, env=full_env, stdout=sink, stderr=sink)
    handle = Worker(bus, process, log)
    try:
        with anyio.fail_after(30):
            while not any(_state(e) == "ready" for _, e in await handle.entries()):
                assert process.returncode is None, handle.logs()
                await anyio.sleep(0.05)
        yield handle
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(10):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            await handle.bus.aclose()


def _state(event: AgentEvent) -> str | None:
    return getattr(event.payload, "state", None)


async def crash_restart(
    redis: services.RedisServer, client: Worker | Manager, down_s: float = DOWN_S
) -> float:
    """SIGKILL Redis, keep it down ``down_s``, restart it, give ``client`` a new connection
    (the test's own client does not retry); the wall-clock time Redis answered again."""
    await anyio.to_thread.run_sync(functools.partial(redis.restart, kill=True, down_s=down_s))
    back = time.time()
    stale, client.bus = client.bus, RedisEventBus.from_url(redis.url)
    await stale.aclose()
    return back


def first_entry_after(entries: list[tuple[str, AgentEvent]], at: float) -> float:
    """Seconds from ``at`` to the first entry Redis appended after it (ids hold its clock)."""
    stamps = [parse_stream_id(i)[0] / 1000 for i, _ in entries]
    return min(s for s in stamps if s >= at - 0.05) - at


def check_run_once(entries: list[tuple[str, AgentEvent]], run_id: str) -> list[AgentEvent]:
    run = [e for _, e in entries if e.run_id == run_id]
    assert [e.seq for e in run] == list(range(len(run))), "each event once, in order"
    assert len({e.id for e in run}) == len(run)
    results = [e for e in run if isinstance(e.payload, ResultPayload)]
    assert len(results) == 1, results
    payload = results[0].payload
    assert isinstance(payload, ResultPayload)
    assert payload.result.status is ResultStatus.SUCCESS, payload.result
    return run


async def test_idle_worker_answers_a_prompt_after_a_redis_restart(
    durable_redis: services.RedisServer, tmp_path: Path
) -> None:
    async with (
        ModelServer(Scenario.text("pong")) as server,
        worker(durable_redis, server, tmp_path) as w,
    ):
        back = await crash_restart(durable_redis, w)
        await w.send({"prompt": "ping", "request_id": "a1"})
        entries = await w.wait_for_result("a1")
        assert w.process.returncode is None
        heartbeats_after = [i for i, e in entries if _state(e) == "heartbeat"]
    check_run_once(entries, "a1")
    assert parse_stream_id(heartbeats_after[-1])[0] / 1000 >= back - 0.05
    print(f"idle worker: first event {first_entry_after(entries, back):.2f} s after Redis was back")


async def test_a_run_cut_by_a_redis_restart_delivers_every_event_once(
    durable_redis: services.RedisServer, tmp_path: Path
) -> None:
    first, second = tmp_path / "work" / "one.txt", tmp_path / "work" / "two.txt"
    write = TOOLS["claude"].write_file
    scenario = Scenario(
        turns=[
            [Text("Writing one."), write(str(first), "1\n")],
            # The model is slow: Redis goes down while the run waits for it, and the rest of
            # the run (message, tool call, result) happens while Redis is still down.
            [Delay(1.0), Text("Writing two."), write(str(second), "2\n")],
            [Text("Both written.")],
        ]
    )
    async with ModelServer(scenario) as server, worker(durable_redis, server, tmp_path) as w:
        await w.send({"prompt": "write both", "request_id": "b1"})
        with anyio.fail_after(60):
            while True:
                if any(isinstance(e.payload, ToolResultPayload) for _, e in await w.entries()):
                    break
                await anyio.sleep(0.02)
        back = await crash_restart(durable_redis, w)
        # The run went on meanwhile: its second file is written while Redis was down.
        assert second.read_text() == "2\n"
        entries = await w.wait_for_result("b1")
        await anyio.sleep(1.0)  # anything doubled would be there by now
        entries = await w.entries()
        inbox = worker_input_stream(WORKER)
        pending, left = await w.bus.pending_count(inbox, "worker"), await w.bus.length(inbox)
        await w.send({"prompt": "still there?", "request_id": "b2"})
        later = await w.wait_for_result("b2")
    run = check_run_once(entries, "b1")
    assert any(isinstance(e.payload, ToolResultPayload) for e in run)
    assert (pending, left) == (0, 0)  # ACKed and deleted once its events were out
    check_run_once(later, "b2")
    print(
        f"mid-run: {len(run)} events of the run exactly once; first event "
        f"{first_entry_after(entries, back):.2f} s after Redis was back"
    )


async def test_a_standby_worker_takes_its_assignment_after_a_redis_restart(
    durable_redis: services.RedisServer, tmp_path: Path
) -> None:
    async with (
        ModelServer(Scenario.text("assigned")) as server,
        standby_worker(durable_redis.url, server, tmp_path) as manager,
    ):
        await crash_restart(durable_redis, manager)
        # The manager's client reconnects on its next call.
        await manager.assign(instructions="Be brief.")
        await manager.send({"prompt": "hello", "request_id": "c1"})
        try:
            ready = await manager.wait_for(
                lambda ev: any(isinstance(e.payload, ResultPayload) for e in ev)
            )
            assert manager.process.returncode is None
        finally:
            await manager.bus.aclose()
    results = [e.payload for _, e in ready if isinstance(e.payload, ResultPayload)]
    assert len(results) == 1
    assert results[0].result.text == "assigned"


async def test_past_the_outage_bound_the_worker_exits_3(
    durable_redis: services.RedisServer, tmp_path: Path
) -> None:
    async with (
        ModelServer(Scenario.text("unused")) as server,
        worker(durable_redis, server, tmp_path, CODEYARD_WORKER_REDIS_OUTAGE_S="2") as w,
    ):
        durable_redis.process.kill()
        began = time.monotonic()
        with anyio.fail_after(20):
            code = await w.process.wait()
        took = time.monotonic() - began
        logs = w.logs()
    assert code == 3, logs
    assert 1.5 <= took < 10, took
    assert logs.count("worker: giving up, redis unreachable") == 1, logs
    assert "Traceback" not in logs
