"""Warm-pool benchmark: a warm-pool claim against a cold create, side by side in one run.

Issue #5: "Warm pool claim is measurably faster than a cold create"; issue #8: "claim ->
agent process started, target p50 <= 60 ms". Run from the repo root::

    uv run python bench/warm_pool.py            # N=20, writes bench/results/warm_pool.json
    uv run python bench/warm_pool.py --smoke    # N=2 (the test suite runs this)

Set-up (all real): Docker, an ephemeral password-protected ``redis-server`` on 0.0.0.0
(workers reach it as ``host.docker.internal``), the scripted model server on 0.0.0.0, a
manager in this process built like ``codeyard serve`` builds it (``open_app`` with the
Docker runtime, ``docker_worker_images``, ``manager_config``) with ``warm_pool_size=1`` for
``WorkerSpec(agent="claude")``, and the real claude CLI in the worker image.

Each repetition measures a *warm* create (the pool's spec) and a *cold* create (the same
image, but a label makes the container shape differ, so the pool cannot serve it), each
with a prompt, before each one waiting until the pool's standby container has logged that
it waits (refill done). The pool refills right after a claim, so the warm run's container
competes with that refill: production behaves the same way.

Clocks: every figure is a difference of Redis server times: ``TIME`` read just before the
create command is published, and the millisecond part of the output stream's entry ids
(``ready`` lifecycle event; ``agent_started``, the run's first event, published as soon
as the agent CLI's process is launched; ``first_output``, the run's first event from the
CLI's own output, i.e. after the CLI's start-up; the run's result). The floor reference is
the host's wall time of ``docker run --rm IMAGE true`` on the worker image.
"""

from __future__ import annotations

import argparse
import logging
import platform
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# `python bench/warm_pool.py` puts bench/ first on sys.path, where a bench script named like
# a stdlib module would shadow it for every later import: put the root there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402
import docker  # noqa: E402
import structlog  # noqa: E402

from bench._common import stats, write_result  # noqa: E402
from codeyard.adapters.cli.stream import AGENT_STARTED  # noqa: E402
from codeyard.app.bootstrap import open_app  # noqa: E402
from codeyard.app.manager.launch import LABEL_ROLE, ROLE_STANDBY  # noqa: E402
from codeyard.app.manager.serve import build_manager, run_manager, worker_images  # noqa: E402
from codeyard.app.manager.settings import manager_config  # noqa: E402
from codeyard.app.settings import Settings  # noqa: E402
from codeyard.client import CodeyardClient  # noqa: E402
from codeyard.domain.agent import ResultStatus  # noqa: E402
from codeyard.domain.container import LABEL_OWNER  # noqa: E402
from codeyard.domain.events import LifecyclePayload  # noqa: E402
from codeyard.domain.streams import parse_stream_id  # noqa: E402
from codeyard.domain.worker import WorkerSpec  # noqa: E402
from codeyard.testing.model_server import ModelServer, Scenario  # noqa: E402
from tests.services import find_redis_server  # noqa: E402
from tests.services.worker_redis import start_worker_redis  # noqa: E402

NAME = "warm_pool"
TARGET_WARM_AGENT_STARTED_P50_MS = 60.0
WARM_SPEC = WorkerSpec(agent="claude")
#: Same image as WARM_SPEC; the label is part of the container's shape, so no standby fits.
COLD_SPEC = WorkerSpec(agent="claude", labels={"dev.codeyard.bench": "cold"})
STEPS = ("ready", "agent_started", "first_output", "result")
STEP_DEADLINE_S = 120.0
ROLE_LABEL = f"{LABEL_ROLE}={ROLE_STANDBY}"


@dataclass(frozen=True)
class Sample:
    """Milliseconds from the create command's publication to each step."""

    ready: float
    agent_started: float
    first_output: float
    result: float


async def server_ms(redis: Any) -> float:
    seconds, micros = await redis.time()
    return float(seconds) * 1000 + float(micros) / 1000


async def measure(client: CodeyardClient, redis: Any, spec: WorkerSpec, *, warm: bool) -> Sample:
    """One create with a prompt, timed on the Redis clock; the worker is deleted after."""
    request_id = f"bench-{uuid.uuid4().hex[:12]}"
    started = await server_ms(redis)
    created = await client.create(spec, prompt="say ok", request_id=request_id, timeout_s=300)
    try:
        if created.warm != warm:
            msg = f"expected a {'warm' if warm else 'cold'} create, got warm={created.warm}"
            raise RuntimeError(msg)
        marks: dict[str, float] = {}
        with anyio.fail_after(STEP_DEADLINE_S):
            async for item in client.events(created.worker_id, block_s=0.5):
                at = parse_stream_id(item.entry_id)[0] - started
                payload = item.event.payload
                if isinstance(payload, LifecyclePayload) and payload.state == "ready":
                    marks.setdefault("ready", at)
                if item.event.run_id == request_id:
                    if isinstance(payload, LifecyclePayload) and payload.state == AGENT_STARTED:
                        marks.setdefault("agent_started", at)
                    else:
                        marks.setdefault("first_output", at)
                if item.result is not None and item.event.run_id == request_id:
                    if item.result.status is not ResultStatus.SUCCESS:
                        raise RuntimeError(f"the bench prompt failed: {item.result}")
                    marks["result"] = at
                    break
        return Sample(**{step: marks[step] for step in STEPS})
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(60):
            await client.delete(created.worker_id, timeout_s=60)


def _standby_waiting(client: docker.DockerClient, owner: str) -> bool:
    labels = [f"{LABEL_OWNER}={owner}", ROLE_LABEL]
    containers = client.containers.list(filters={"label": labels, "status": "running"})
    return any(b"standby: waiting" in c.logs(tail=50) for c in containers)


async def pool_ready(client: docker.DockerClient, owner: str) -> None:
    """Until a standby container of ``owner`` has connected and waits for its assignment."""
    with anyio.fail_after(STEP_DEADLINE_S):
        while True:  # the state is in another process (the container's log): poll it
            if await anyio.to_thread.run_sync(_standby_waiting, client, owner):
                return
            await anyio.sleep(0.1)


def docker_run_floor(image: str, repetitions: int) -> list[float]:
    """Wall milliseconds of ``docker run --rm IMAGE true``: the engine's own floor."""
    samples = []
    for _ in range(repetitions):
        began = time.perf_counter()
        subprocess.run(
            ["docker", "run", "--rm", "--network", "none", image, "true"],
            check=True,
            capture_output=True,
        )
        samples.append((time.perf_counter() - began) * 1000)
    return samples


def remove_owned(client: docker.DockerClient, owner: str) -> None:
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"}):
        container.remove(force=True)


async def run_bench(repetitions: int) -> dict[str, Any]:
    redis_binary = find_redis_server()
    if redis_binary is None:
        raise SystemExit("redis-server is not installed (scripts/dev setup installs it)")
    worker_redis = await anyio.to_thread.run_sync(start_worker_redis, redis_binary)
    owner = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        async with ModelServer(Scenario.text("ok"), host="0.0.0.0") as server:
            settings = Settings(
                backends={"event_bus": "redis", "runtime": "docker"},
                redis_url=worker_redis.endpoint.url,
                owner=owner,
                manager={
                    "agent_base_url": server.base_url,
                    "agent_api_key": "sk-ant-codeyard-bench",
                    "warm_pool_size": 1,
                    "warm_pool_agents": ("claude",),
                    "watch_interval_s": 0.5,
                },
            )
            async with open_app(settings) as app:
                docker_client: docker.DockerClient = app.clients["docker_client"]
                try:
                    return await _run(app, settings, docker_client, owner, repetitions)
                finally:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(remove_owned, docker_client, owner)
    finally:
        worker_redis.stop()


async def _run(
    app: Any, settings: Settings, docker_client: docker.DockerClient, owner: str, n: int
) -> dict[str, Any]:
    images = await worker_images(settings, app)
    image = (await images.ensure(WARM_SPEC)).tag
    floor = await anyio.to_thread.run_sync(docker_run_floor, image, n)
    manager = build_manager(app, manager_config(settings), images)
    redis = app.clients["redis_client"]
    cold: list[Sample] = []
    warm: list[Sample] = []
    async with anyio.create_task_group() as tg:
        await tg.start(run_manager, manager)
        client = CodeyardClient(app.event_bus, reply_timeout_s=300)
        for rep in range(n):
            await pool_ready(docker_client, owner)
            warm.append(await measure(client, redis, WARM_SPEC, warm=True))
            await pool_ready(docker_client, owner)  # the refill is not on the cold path
            cold.append(await measure(client, redis, COLD_SPEC, warm=False))
            print(f"rep {rep + 1}/{n}: warm {warm[-1]}  cold {cold[-1]}", file=sys.stderr)
        tg.cancel_scope.cancel()
    return report(image, n, cold, warm, floor)


def report(
    image: str, n: int, cold: list[Sample], warm: list[Sample], floor: list[float]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": NAME,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "repetitions": n,
        "host": platform.node(),
        "image": image,
        "agent": "claude (scripted model server)",
        "clock": "Redis server time (TIME before the create; output stream entry ids)",
        "cold": {s: stats([getattr(x, s) for x in cold]) for s in STEPS},
        "warm": {s: stats([getattr(x, s) for x in warm]) for s in STEPS},
        "docker_run_rm_floor": stats(floor),
    }
    out["ratio_cold_over_warm_p50"] = {
        s: round(out["cold"][s]["p50_ms"] / max(out["warm"][s]["p50_ms"], 1.0), 2) for s in STEPS
    }
    warm_started = out["warm"]["agent_started"]["p50_ms"]
    out["target"] = {
        "warm_agent_started_p50_ms": TARGET_WARM_AGENT_STARTED_P50_MS,
        "met": warm_started <= TARGET_WARM_AGENT_STARTED_P50_MS,
    }
    return out


def summary_line(result: dict[str, Any]) -> str:
    cold, warm, ratio = result["cold"], result["warm"], result["ratio_cold_over_warm_p50"]
    parts = [
        f"{step} {cold[step]['p50_ms']:.0f}/{warm[step]['p50_ms']:.0f} ms (x{ratio[step]})"
        for step in STEPS
    ]
    return (
        f"- {result['measured_at']} warm_pool n={result['repetitions']}: create -> "
        f"p50 cold/warm: {'; '.join(parts)}; "
        f"docker run --rm floor p50 {result['docker_run_rm_floor']['p50_ms']:.0f} ms; "
        f"target warm agent_started p50 <= {TARGET_WARM_AGENT_STARTED_P50_MS:.0f} ms: "
        f"{'met' if result['target']['met'] else 'missed'}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--repetitions", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="2 repetitions")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    n = 2 if args.smoke else args.repetitions
    result = anyio.run(run_bench, n)
    write_result(args.out_dir, NAME, result, summary_line(result))


if __name__ == "__main__":
    main()
