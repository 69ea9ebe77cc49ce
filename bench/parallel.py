"""Parallel benchmark: N concurrent tasks end to end against N concurrent bare containers.

Issue #8: "N = 10/30/50 tasks end to end (create with a prompt -> result -> delete),
concurrency N: target <= 1.2x the engine's own spawn floor for the same count; manager RSS
with 50 live workers <= 150 MB". Run from the repo root::

    uv run python bench/parallel.py                 # N = 10, 30, 50
    uv run python bench/parallel.py --sizes 10 30   # a subset
    uv run python bench/parallel.py --smoke         # N = 2 (the test suite runs this)

Set-up (all real, see ``bench._common.docker_manager_app``): Docker, an ephemeral Redis,
the scripted model server, a manager in this process built like ``codeyard serve``
(``warm_pool_size=0``, ``max_workers`` above the largest N), the real claude CLI in the
worker image (built or found cached before timing).

For each N, back to back, two baselines and the tasks:

- the Docker floor: N concurrent ``containers.run(IMAGE, "true", remove=True)`` through
  the Docker SDK (create, start, wait, remove), wall time until the last one is removed;
- codeyard's own spawn floor: N concurrent creates WITHOUT a prompt through the same
  manager, each waiting for its worker's ``ready`` event, then all deleted: what the engine
  itself needs to run N workers, so the tasks' ratio over it is the cost of the agent
  runs (a Node CLI per task) on top of spawning;
- the tasks: N concurrent creates with a one-line prompt, each waiting for its run's
  result; once all N results are in (N workers alive), the RSS of this process is read,
  then all N are deleted concurrently. Wall time from the first create to the last delete.

The RSS is this process's ``VmRSS``: the manager, plus the bench's client and the scripted
model server, which run in the same process (so it over-states the manager alone).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import (
    RESULTS_DIR,
    docker_manager_app,
    header,
    met,
    rss_mb,
    setup_path,
    stats,
    write_result,
)

setup_path()

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402
import docker  # noqa: E402
import structlog  # noqa: E402

from codeyard.app.manager.serve import build_manager, run_manager, worker_images  # noqa: E402
from codeyard.app.manager.settings import manager_config  # noqa: E402
from codeyard.client import CodeyardClient  # noqa: E402
from codeyard.domain.agent import ResultStatus  # noqa: E402
from codeyard.domain.events import LifecyclePayload  # noqa: E402
from codeyard.domain.worker import WorkerSpec  # noqa: E402

NAME = "parallel"
TARGET_RATIO = 1.2
TARGET_RSS_MB = 150.0
RSS_AT = 50
SPEC = WorkerSpec(agent="claude")
TASK_DEADLINE_S = 600.0


class Batch:
    """One N-task run: per-task ms (create reply, result, delete) and the barrier."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.create_ms: list[float] = []
        self.result_ms: list[float] = []
        self.delete_ms: list[float] = []
        self.all_done = anyio.Event()
        self.rss_read = anyio.Event()
        self.failures: list[str] = []

    def done(self) -> None:
        if len(self.result_ms) + len(self.failures) == self.n:
            self.all_done.set()


async def task(client: CodeyardClient, batch: Batch, began: float) -> None:
    """create with a prompt -> its result -> (all N done, RSS read) -> delete."""
    created = await client.create(SPEC, prompt="say ok", timeout_s=TASK_DEADLINE_S)
    batch.create_ms.append((time.perf_counter() - began) * 1000)
    try:
        result = await client.wait_result(
            created.worker_id, request_id=created.prompt_request_id, timeout_s=TASK_DEADLINE_S
        )
        if result.status is ResultStatus.SUCCESS:
            batch.result_ms.append((time.perf_counter() - began) * 1000)
        else:
            batch.failures.append(f"{created.worker_id}: {result.status}")
        batch.done()
        await batch.rss_read.wait()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(120):
            await client.delete(created.worker_id, timeout_s=120)
            batch.delete_ms.append((time.perf_counter() - began) * 1000)


async def run_tasks(client: CodeyardClient, app: Any, n: int) -> dict[str, Any]:
    batch = Batch(n)
    began = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(task, client, batch, began)
        await batch.all_done.wait()
        results_wall = (time.perf_counter() - began) * 1000
        live = len(await app.registry.list_active())
        rss = rss_mb()
        batch.rss_read.set()
    wall = (time.perf_counter() - began) * 1000
    return {
        "wall_ms": round(wall, 1),
        "results_wall_ms": round(results_wall, 1),
        "live_workers_at_rss": live,
        "rss_mb": round(rss, 1),
        "failures": batch.failures,
        "create_reply": stats(batch.create_ms),
        "result": stats(batch.result_ms) if batch.result_ms else None,
        "deleted": stats(batch.delete_ms),
    }


async def spawn_floor_ms(client: CodeyardClient, n: int) -> float:
    """Wall ms of N concurrent creates without a prompt -> ``ready`` each -> all deleted."""
    ready = 0
    all_ready = anyio.Event()

    async def one() -> None:
        nonlocal ready
        created = await client.create(SPEC, timeout_s=TASK_DEADLINE_S)
        try:
            with anyio.fail_after(TASK_DEADLINE_S):
                async for item in client.events(created.worker_id, block_s=0.5):
                    payload = item.event.payload
                    if isinstance(payload, LifecyclePayload) and payload.state == "ready":
                        break
            ready += 1
            if ready == n:
                all_ready.set()
            await all_ready.wait()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(120):
                await client.delete(created.worker_id, timeout_s=120)

    began = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return (time.perf_counter() - began) * 1000


def floor_wall_ms(image: str, n: int) -> float:
    """Wall ms of N concurrent SDK ``run(IMAGE, "true", remove=True)`` (own pool of N)."""
    client = docker.from_env(max_pool_size=max(n, 10))
    try:

        async def all_of_them() -> float:
            limiter = anyio.CapacityLimiter(n)
            began = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(
                        lambda: anyio.to_thread.run_sync(
                            lambda: client.containers.run(image, "true", remove=True),
                            limiter=limiter,
                        )
                    )
            return (time.perf_counter() - began) * 1000

        return anyio.run(all_of_them)
    finally:
        client.close()


async def run_bench(sizes: list[int]) -> dict[str, Any]:
    biggest = max(sizes)
    async with docker_manager_app("bench-par", max_workers=biggest + 4) as (app, settings, _):
        images = await worker_images(settings, app)
        image = (await images.ensure(SPEC)).tag
        await anyio.to_thread.run_sync(floor_wall_ms, image, 1)  # warm the engine's caches
        manager = build_manager(app, manager_config(settings), images)
        runs: dict[str, Any] = {}
        # The bench's client gets its own Redis connection pool, as an orchestrator in
        # another process would: its N blocking reads must not eat the manager's pool
        # (redis-py's default is 100 connections; the manager holds one per watched worker).
        connect = CodeyardClient.connect(settings.secret("redis_url"), reply_timeout_s=600)
        async with connect as client, anyio.create_task_group() as tg:
            await tg.start(run_manager, manager)
            idle_rss = rss_mb()
            for n in sizes:
                floor = await anyio.to_thread.run_sync(floor_wall_ms, image, n)
                spawn = await spawn_floor_ms(client, n)
                run = await run_tasks(client, app, n)
                run["floor_wall_ms"] = round(floor, 1)
                run["ratio_over_floor"] = round(run["wall_ms"] / max(floor, 1.0), 2)
                run["spawn_floor_wall_ms"] = round(spawn, 1)
                run["ratio_over_spawn_floor"] = round(run["wall_ms"] / max(spawn, 1.0), 2)
                runs[str(n)] = run
                print(
                    f"N={n}: {run['wall_ms']:.0f} ms vs docker floor {floor:.0f} ms, "
                    f"codeyard spawn floor {spawn:.0f} ms",
                    file=sys.stderr,
                )
            tg.cancel_scope.cancel()
    return report(image, sizes, runs, idle_rss)


def report(image: str, sizes: list[int], runs: dict[str, Any], idle_rss: float) -> dict[str, Any]:
    out = header(NAME, sizes=sizes, image=image, agent="claude (scripted model server)")
    out["rss_idle_manager_mb"] = round(idle_rss, 1)
    out["runs"] = runs
    rss_run = runs.get(str(RSS_AT))
    out["target"] = {
        "ratio_max": TARGET_RATIO,
        "ratio_met": {n: r["ratio_over_floor"] <= TARGET_RATIO for n, r in runs.items()},
        "ratio_over_spawn_floor_met": {
            n: r["ratio_over_spawn_floor"] <= TARGET_RATIO for n, r in runs.items()
        },
        "rss_max_mb": TARGET_RSS_MB,
        "rss_at_workers": RSS_AT,
        # Only judged when the 50-worker run happened (not in --smoke).
        "rss_met": None if rss_run is None else rss_run["rss_mb"] <= TARGET_RSS_MB,
    }
    return out


def summary_line(result: dict[str, Any]) -> str:
    target = result["target"]
    parts = [
        f"N={n} {r['wall_ms'] / 1000:.1f} s vs docker {r['floor_wall_ms'] / 1000:.1f} s "
        f"(x{r['ratio_over_floor']}, {met(target['ratio_met'][n])}) vs codeyard spawn "
        f"{r['spawn_floor_wall_ms'] / 1000:.1f} s (x{r['ratio_over_spawn_floor']}, "
        f"{met(target['ratio_over_spawn_floor_met'][n])}), RSS {r['rss_mb']:.0f} MB"
        for n, r in result["runs"].items()
    ]
    rss = "not measured" if target["rss_met"] is None else met(target["rss_met"])
    return (
        f"- {result['measured_at']} parallel: tasks/floor wall: {'; '.join(parts)}; "
        f"target <= x{TARGET_RATIO}; RSS <= {TARGET_RSS_MB:.0f} MB at {RSS_AT} workers: {rss}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 30, 50])
    parser.add_argument("--smoke", action="store_true", help="N = 2 only")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sizes = [2] if args.smoke else args.sizes
    result = anyio.run(run_bench, sizes)
    write_result(args.out_dir, NAME, result, summary_line(result))


if __name__ == "__main__":
    main()
