"""Spawn benchmark: a cold worker create against a bare ``docker run --rm``, in one run.

Issue #8: "spawn (create command -> worker RUNNING / first output event), cold, image
cached, no warm pool: target <= 1.3x a bare ``docker run --rm`` of the same image". Run
from the repo root::

    uv run python bench/spawn.py             # N=20, writes bench/results/spawn.json
    uv run python bench/spawn.py --smoke     # N=2 (the test suite runs this)

Set-up (all real, see ``bench._common.docker_manager_app``): Docker, an ephemeral Redis,
the scripted model server, a manager in this process built like ``codeyard serve`` with
``warm_pool_size=0``; the claude worker image is built (or found cached) before timing.

Each repetition times, back to back so both see the same load:

- a create without a prompt (an interactive worker): from ``TIME`` on Redis just before
  the create command is published to (a) the first entry of the worker's output stream
  (the wrapper's first event) and (b) the registry's ``started_at`` (stamped when the
  manager moves the worker to RUNNING on the wrapper's ``ready``); then the worker is
  deleted (timed apart, not part of the spawn);
- the floor: ``containers.run(IMAGE, "true", remove=True)`` through the Docker SDK (create,
  start, wait, remove) on the same image, host wall time.

Clocks: Redis runs on this host, so its ``TIME``, the stream ids and the registry's
wall-clock stamp are one clock.
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
    redis_ms,
    setup_path,
    stats,
    write_result,
)

setup_path()

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402
import structlog  # noqa: E402

from codeyard.app.manager.serve import build_manager, run_manager, worker_images  # noqa: E402
from codeyard.app.manager.settings import manager_config  # noqa: E402
from codeyard.client import CodeyardClient  # noqa: E402
from codeyard.domain.streams import parse_stream_id  # noqa: E402
from codeyard.domain.worker import WorkerSpec  # noqa: E402

NAME = "spawn"
TARGET_RATIO = 1.3
SPEC = WorkerSpec(agent="claude")
STEPS = ("first_event", "running")
#: Not a target: when the manager's reply to the create arrived (container started).
INFO_STEPS = ("create_reply",)
STEP_DEADLINE_S = 120.0


async def measure(client: CodeyardClient, app: Any) -> tuple[dict[str, float], float]:
    """One cold create: ms to each of STEPS, and the delete's ms (host wall time)."""
    redis = app.clients["redis_client"]
    started = await redis_ms(redis)
    created = await client.create(SPEC, timeout_s=300)
    marks = {"create_reply": await redis_ms(redis) - started}
    try:
        with anyio.fail_after(STEP_DEADLINE_S):
            async for item in client.events(created.worker_id, block_s=0.5):
                marks["first_event"] = parse_stream_id(item.entry_id)[0] - started
                break
            while True:  # the manager stamps RUNNING from its watcher task: poll its registry
                record = await app.registry.get(created.worker_id)
                if record is not None and record.started_at is not None:
                    marks["running"] = record.started_at.timestamp() * 1000 - started
                    break
                await anyio.sleep(0.005)
    finally:
        began = time.perf_counter()
        with anyio.CancelScope(shield=True), anyio.move_on_after(60):
            await client.delete(created.worker_id, timeout_s=60)
        deleted_ms = (time.perf_counter() - began) * 1000
    return marks, deleted_ms


def docker_run_rm(docker_client: Any, image: str) -> float:
    """Wall ms of the SDK's ``run(IMAGE, "true", remove=True)``: create+start+wait+remove."""
    began = time.perf_counter()
    docker_client.containers.run(image, "true", remove=True)
    return (time.perf_counter() - began) * 1000


async def run_bench(n: int) -> dict[str, Any]:
    async with docker_manager_app("bench-spawn", warm_pool_size=0) as (app, settings, docker):
        images = await worker_images(settings, app)
        image = (await images.ensure(SPEC)).tag
        await anyio.to_thread.run_sync(docker_run_rm, docker, image)  # warm the engine's caches
        manager = build_manager(app, manager_config(settings), images)
        samples: dict[str, list[float]] = {s: [] for s in STEPS + INFO_STEPS}
        floor: list[float] = []
        deletes: list[float] = []
        async with anyio.create_task_group() as tg:
            await tg.start(run_manager, manager)
            client = CodeyardClient(app.event_bus, reply_timeout_s=300)
            for rep in range(n):
                marks, deleted = await measure(client, app)
                floor.append(await anyio.to_thread.run_sync(docker_run_rm, docker, image))
                for step in STEPS + INFO_STEPS:
                    samples[step].append(marks[step])
                deletes.append(deleted)
                print(f"rep {rep + 1}/{n}: {marks} floor {floor[-1]:.0f} ms", file=sys.stderr)
            tg.cancel_scope.cancel()
    return report(image, n, samples, floor, deletes)


def report(
    image: str, n: int, samples: dict[str, list[float]], floor: list[float], deletes: list[float]
) -> dict[str, Any]:
    out = header(NAME, repetitions=n, image=image, agent="claude (no prompt: spawn only)")
    out["clock"] = "Redis TIME before the create; stream entry ids; registry started_at"
    out["cold"] = {step: stats(samples[step]) for step in STEPS + INFO_STEPS}
    out["delete"] = stats(deletes)
    out["docker_run_rm_floor"] = stats(floor)
    floor_p50 = max(out["docker_run_rm_floor"]["p50_ms"], 1.0)
    out["ratio_over_floor_p50"] = {
        step: round(out["cold"][step]["p50_ms"] / floor_p50, 2) for step in STEPS
    }
    out["target"] = {
        "ratio_max": TARGET_RATIO,
        "met": {step: out["ratio_over_floor_p50"][step] <= TARGET_RATIO for step in STEPS},
    }
    return out


def summary_line(result: dict[str, Any]) -> str:
    cold, ratio = result["cold"], result["ratio_over_floor_p50"]
    parts = [
        f"{step} p50 {cold[step]['p50_ms']:.0f} ms (x{ratio[step]}, "
        f"{met(result['target']['met'][step])})"
        for step in STEPS
    ]
    return (
        f"- {result['measured_at']} spawn n={result['repetitions']}: cold create -> "
        f"{'; '.join(parts)}; docker run --rm floor p50 "
        f"{result['docker_run_rm_floor']['p50_ms']:.0f} ms; target <= x{TARGET_RATIO}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).split("\n")[0])
    parser.add_argument("-n", "--repetitions", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="2 repetitions")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    n = 2 if args.smoke else args.repetitions
    result = anyio.run(run_bench, n)
    write_result(args.out_dir, NAME, result, summary_line(result))


if __name__ == "__main__":
    main()
