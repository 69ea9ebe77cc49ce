"""Job-queue benchmark: PostgresWorkQueue claim+complete rate against procrastinate's.

Issue #8: "the Postgres work queue claims and completes jobs at least as fast as an
established Postgres job queue (procrastinate), target >= 1.0x". Run from the repo root::

    uv run python bench/work_queue.py       # 5 rounds of 2000 jobs, 8 concurrent workers
    uv run python bench/work_queue.py --smoke # 2 rounds of 100 jobs (the test suite runs this)

Set-up (all real): one ephemeral PostgreSQL cluster started like the test fixtures start it
(tests/services/postgres.py: fsync off, on tmpfs when there is room), one database per
queue on it. codeyard: ``PostgresWorkQueue`` over an asyncpg pool, schema from
``migrate``. procrastinate: its ``PsycopgConnector`` (psycopg 3 pool; procrastinate 3 has no
asyncpg connector) and its own schema, driven through its ``JobManager`` as its worker
does: ``fetch_job`` (marks the job ``doing``) then ``finish_job(succeeded)``.

Each round enqueues the same number of jobs in both queues (not timed), then times C
concurrent workers, each looping claim -> complete until the queue is empty. Both pools
hold C connections opened before the clock starts. The order of the two systems alternates
between rounds so neither always runs on the warmer server. Figures: jobs/s per round
(p50/p95 over rounds) and the latency of one claim+complete pair (p50/p95 over all jobs).
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/work_queue.py` puts bench/ first on sys.path, where a bench script named like
# a stdlib module would shadow it: drop it before any other import.
_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "bench"]
sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402
from datetime import timedelta  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402
import asyncpg  # noqa: E402
import procrastinate  # noqa: E402

from bench._common import RESULTS_DIR, header, met, stats, write_result  # noqa: E402
from codeyard.adapters.postgres.migrate import migrate  # noqa: E402
from codeyard.adapters.postgres.work_queue import PostgresWorkQueue  # noqa: E402
from tests.services import find_postgres_bindir, start_postgres  # noqa: E402

NAME = "work_queue"
TARGET_RATIO = 1.0
QUEUE = "bench"
LEASE = timedelta(minutes=5)

#: One worker's loop: claim a job and complete it; False when the queue was empty.
Step = Callable[[], Awaitable[bool]]


async def drain(step_factory: Callable[[], Step], concurrency: int) -> tuple[float, list[float]]:
    """Run ``concurrency`` workers until the queue is empty: (seconds, per-job latencies ms)."""
    latencies: list[float] = []

    async def worker() -> None:
        step = step_factory()
        while True:
            began = time.perf_counter()
            if not await step():
                return
            latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    return time.perf_counter() - began, latencies


class Codeyard:
    """PostgresWorkQueue on its own database."""

    label = "codeyard PostgresWorkQueue (asyncpg)"

    def __init__(self, dsn: str, concurrency: int) -> None:
        self._dsn, self._concurrency = dsn, concurrency

    async def __aenter__(self) -> Codeyard:
        size = self._concurrency + 1
        self._pool = await asyncpg.create_pool(self._dsn, min_size=size, max_size=size)
        await migrate(self._pool)
        self.queue = PostgresWorkQueue(self._pool)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(30):
            await self.queue.aclose()
            await self._pool.close()

    async def enqueue(self, n: int) -> None:
        for i in range(n):
            await self.queue.enqueue(QUEUE, {"i": i})

    def step(self) -> Step:
        owner = f"w-{uuid.uuid4().hex[:8]}"

        async def step() -> bool:
            job = await self.queue.claim(QUEUE, owner, lease=LEASE)
            if job is None:
                return False
            await self.queue.complete(job.id, owner, result={"ok": True})
            return True

        return step


class Procrastinate:
    """procrastinate's JobManager on its own database (fetch_job / finish_job)."""

    label = "procrastinate (PsycopgConnector)"

    def __init__(self, dsn: str, concurrency: int) -> None:
        size = concurrency + 1
        self._app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=dsn, min_size=size, max_size=size)
        )
        self._worker_ids: list[int] = []

    async def __aenter__(self) -> Procrastinate:
        await self._app.open_async()
        await self._app.schema_manager.apply_schema_async()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(30):
            await self._app.close_async()

    async def enqueue(self, n: int) -> None:
        jobs = procrastinate.jobs
        manager = self._app.job_manager
        for i in range(n):
            job = jobs.Job(id=None, queue=QUEUE, lock=None, queueing_lock=None,
                           task_name="bench", task_kwargs={"i": i})  # fmt: skip
            await manager.defer_job_async(job)

    async def register(self, concurrency: int) -> None:
        """procrastinate 3 fetches on behalf of a registered worker (heartbeat row)."""
        while len(self._worker_ids) < concurrency:
            self._worker_ids.append(await self._app.job_manager.register_worker())

    def step(self) -> Step:
        manager = self._app.job_manager
        worker_id = self._worker_ids.pop()
        succeeded = procrastinate.jobs.Status.SUCCEEDED

        async def step() -> bool:
            job = await manager.fetch_job(queues=[QUEUE], worker_id=worker_id)
            if job is None:
                return False
            await manager.finish_job(job, status=succeeded, delete_job=False)
            return True

        return step


async def run_bench(rounds: int, jobs: int, concurrency: int) -> dict[str, Any]:
    bindir = find_postgres_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed (scripts/dev setup installs it)")
    server = await anyio.to_thread.run_sync(start_postgres, bindir)
    try:
        for db in ("bench_codeyard", "bench_procrastinate"):
            await anyio.to_thread.run_sync(server.create_database, db)
        codeyard = Codeyard(server.dsn("bench_codeyard"), concurrency)
        other = Procrastinate(server.dsn("bench_procrastinate"), concurrency)
        async with codeyard, other:
            figures: dict[str, dict[str, list[float]]] = {
                key: {"rate": [], "latency": []} for key in ("codeyard", "procrastinate")
            }
            for rnd in range(rounds):
                await codeyard.enqueue(jobs)
                await other.enqueue(jobs)
                await other.register(concurrency)
                order: list[tuple[str, Any]] = [("codeyard", codeyard), ("procrastinate", other)]
                for key, system in order if rnd % 2 == 0 else order[::-1]:
                    seconds, latencies = await drain(system.step, concurrency)
                    if len(latencies) != jobs:
                        raise RuntimeError(f"{key} completed {len(latencies)} of {jobs} jobs")
                    figures[key]["rate"].append(jobs / seconds)
                    figures[key]["latency"].extend(latencies)
                print(
                    f"round {rnd + 1}/{rounds}: jobs/s codeyard "
                    f"{figures['codeyard']['rate'][-1]:.0f} procrastinate "
                    f"{figures['procrastinate']['rate'][-1]:.0f}",
                    file=sys.stderr,
                )
            labels = {"codeyard": codeyard.label, "procrastinate": other.label}
    finally:
        await anyio.to_thread.run_sync(server.stop)
    return report(rounds, jobs, concurrency, figures, labels)


def report(
    rounds: int,
    jobs: int,
    concurrency: int,
    figures: dict[str, dict[str, list[float]]],
    labels: dict[str, str],
) -> dict[str, Any]:
    out = header(
        NAME,
        rounds=rounds,
        jobs_per_round=jobs,
        concurrency=concurrency,
        procrastinate_version=procrastinate.__version__,
        clock="perf_counter around each drain (rate) and each claim+complete pair (latency)",
    )
    for key, fig in figures.items():
        out[key] = {
            "label": labels[key],
            "jobs_per_s": stats(fig["rate"], "jobs_per_s"),
            "claim_complete": stats(fig["latency"], keep_samples=False, digits=2),
        }
    ratio = out["codeyard"]["jobs_per_s"]["p50_jobs_per_s"] / max(
        out["procrastinate"]["jobs_per_s"]["p50_jobs_per_s"], 1e-9
    )
    out["ratio_codeyard_over_procrastinate_p50"] = round(ratio, 2)
    out["target"] = {"ratio_min": TARGET_RATIO, "met": ratio >= TARGET_RATIO}
    return out


def summary_line(result: dict[str, Any]) -> str:
    c, p = result["codeyard"], result["procrastinate"]
    return (
        f"- {result['measured_at']} {NAME} rounds={result['rounds']} "
        f"jobs={result['jobs_per_round']} c={result['concurrency']}: claim+complete jobs/s "
        f"p50 codeyard {c['jobs_per_s']['p50_jobs_per_s']:.0f} / procrastinate "
        f"{p['jobs_per_s']['p50_jobs_per_s']:.0f} "
        f"(x{result['ratio_codeyard_over_procrastinate_p50']}); pair latency p50 "
        f"{c['claim_complete']['p50_ms']:.2f}/{p['claim_complete']['p50_ms']:.2f} ms; "
        f"target >= {TARGET_RATIO}x: {met(result['target']['met'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("-c", "--concurrency", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="2 rounds of 100 jobs")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    rounds, jobs = (2, 100) if args.smoke else (args.rounds, args.jobs)
    # procrastinate warns that the App lives in __main__ (it only matters for its CLI).
    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    result = anyio.run(run_bench, rounds, jobs, args.concurrency)
    write_result(args.out_dir, NAME, result, summary_line(result))


if __name__ == "__main__":
    main()
