"""Helpers shared by the bench/ scripts: percentiles, result writing, timing.

Import as ``from bench._common import ...`` after putting the repo root on ``sys.path``
(:func:`setup_path` does it; each script calls it before importing ``codeyard``).

Conventions (bench/README.md): every script measures its figure *and* its baseline in the
same run, writes ``<out_dir>/<name>.json`` (p50/p95 plus the raw samples) and appends one
line to ``<out_dir>/summary.md``. Helpers B2/B3 add go at the END of this file.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"


def setup_path() -> None:
    """Put the repo root first on ``sys.path`` instead of ``bench/``.

    ``python bench/X.py`` puts ``bench/`` first, where a script named like a stdlib module
    (say ``queue.py``) would shadow it for every later import; the root is what
    ``import codeyard``/``tests``/``bench._common`` need."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def stats(
    values: list[float], unit: str = "ms", *, digits: int = 1, keep_samples: bool = True
) -> dict[str, Any]:
    """``{"p50_<unit>", "p95_<unit>", "samples_<unit>"}``; add p99 with :func:`stats_p99`."""
    out: dict[str, Any] = {
        f"p50_{unit}": round(percentile(values, 50), digits),
        f"p95_{unit}": round(percentile(values, 95), digits),
    }
    if keep_samples:
        out[f"samples_{unit}"] = [round(v, digits) for v in values]
    return out


def stats_p99(values: list[float], unit: str = "ms", *, digits: int = 3) -> dict[str, Any]:
    """Latency summary for many samples (too many to keep): p50/p95/p99/max and the count."""
    return {
        "n": len(values),
        f"p50_{unit}": round(percentile(values, 50), digits),
        f"p95_{unit}": round(percentile(values, 95), digits),
        f"p99_{unit}": round(percentile(values, 99), digits),
        f"max_{unit}": round(max(values), digits),
    }


def header(name: str, **extra: Any) -> dict[str, Any]:
    """The fields every result JSON starts with."""
    return {
        "name": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        **extra,
    }


def write_result(out_dir: Path, name: str, result: dict[str, Any], summary_line: str) -> None:
    """``<out_dir>/<name>.json`` (replaced) and one line appended to ``summary.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    line = summary_line if summary_line.endswith("\n") else summary_line + "\n"
    with (out_dir / "summary.md").open("a") as summary:
        summary.write(line)
    print(line, end="")


def met(ok: bool) -> str:
    return "met" if ok else "missed"


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """``with timer() as elapsed: ...``; ``elapsed()`` is seconds (perf_counter), frozen at exit."""
    began = time.perf_counter()
    ended: list[float] = []
    yield lambda: (ended[0] if ended else time.perf_counter()) - began
    ended.append(time.perf_counter())


# --- B2: the in-process manager set-up of warm_pool.py, shared by spawn.py and parallel.py ---


@asynccontextmanager
async def docker_manager_app(
    owner_prefix: str = "bench", **manager: Any
) -> AsyncIterator[tuple[Any, Any, Any]]:
    """``(app, settings, docker_client)`` of a manager built like ``codeyard serve`` over
    real Docker, an ephemeral password-protected Redis on 0.0.0.0 and the scripted model
    server (answer "ok") on 0.0.0.0, as bench/warm_pool.py sets them up. ``manager`` entries
    override the manager settings (``warm_pool_size`` defaults to 0; ``max_workers`` is a
    top-level setting and is taken from here too). Every container of the run's owner is
    removed on exit. Imports are local: callers run :func:`setup_path` first."""
    import uuid  # noqa: PLC0415

    import anyio  # noqa: PLC0415
    import anyio.to_thread  # noqa: PLC0415

    from codeyard.app.bootstrap import open_app  # noqa: PLC0415
    from codeyard.app.settings import Settings  # noqa: PLC0415
    from codeyard.domain.container import LABEL_OWNER  # noqa: PLC0415
    from codeyard.testing.model_server import ModelServer, Scenario  # noqa: PLC0415
    from tests.services import find_redis_server  # noqa: PLC0415
    from tests.services.worker_redis import start_worker_redis  # noqa: PLC0415

    def remove_owned(client: Any, owner: str) -> None:
        for c in client.containers.list(all=True, filters={"label": f"{LABEL_OWNER}={owner}"}):
            c.remove(force=True)

    redis_binary = find_redis_server()
    if redis_binary is None:
        raise SystemExit("redis-server is not installed (scripts/dev setup installs it)")
    worker_redis = await anyio.to_thread.run_sync(start_worker_redis, redis_binary)
    owner = f"{owner_prefix}-{uuid.uuid4().hex[:8]}"
    max_workers = manager.pop("max_workers", 8)
    try:
        async with ModelServer(Scenario.text("ok"), host="0.0.0.0") as server:
            settings = Settings(
                backends={"event_bus": "redis", "runtime": "docker"},
                redis_url=worker_redis.endpoint.url,
                owner=owner,
                max_workers=max_workers,
                manager={
                    "agent_base_url": server.base_url,
                    "agent_api_key": "sk-ant-codeyard-bench",
                    "warm_pool_size": 0,
                    "watch_interval_s": 0.5,
                    **manager,
                },
            )
            async with open_app(settings) as app:
                docker_client = app.clients["docker_client"]
                try:
                    yield app, settings, docker_client
                finally:
                    with anyio.CancelScope(shield=True):
                        await anyio.to_thread.run_sync(remove_owned, docker_client, owner)
    finally:
        worker_redis.stop()


async def redis_ms(redis: Any) -> float:
    """The Redis server's clock in ms (stream entry ids use the same clock)."""
    seconds, micros = await redis.time()
    return float(seconds) * 1000 + float(micros) / 1000


def rss_mb() -> float:
    """This process's resident set size (``VmRSS`` of /proc/self/status) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")
