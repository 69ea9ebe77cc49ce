"""bench/warm_pool.py in ``--smoke`` mode (2 repetitions): it runs end to end on real Docker
and Redis, writes its JSON and summary line, and a warm-pool claim beats a cold create.

The margin asserted is the cold path's container create + start + wrapper boot (~1 s on a
laptop) against a claim (tens of ms), so it holds on a loaded machine; the timings
themselves are the bench's business, not this test's. The first run on a checkout builds
the claude worker image (minutes; seconds when the layer cache is warm), hence the timeout.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import docker
import pytest

from tests import services
from tests.bench_support import run_bench_smoke

STEPS = ("ready", "agent_started", "first_output", "result")


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_warm_pool_bench_runs_and_warm_beats_cold(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    if services.find_redis_server() is None:
        services.service_unavailable("Redis", "the redis-server binary is not installed")
    if shutil.which("docker") is None:
        services.service_unavailable("the docker CLI", "not on PATH (the bench's floor uses it)")
    result = run_bench_smoke("warm_pool", tmp_path, timeout_s=880, clean_env=True)
    assert result["repetitions"] == 2
    for kind in ("cold", "warm"):
        for step in STEPS:
            figures = result[kind][step]
            assert len(figures["samples_ms"]) == 2
            assert 0 <= figures["p50_ms"] <= figures["p95_ms"] < 120_000, (kind, step, figures)
        # Steps happen in order within each sample.
        for ready, started, first_output, finished in zip(
            *(result[kind][step]["samples_ms"] for step in STEPS), strict=True
        ):
            assert ready <= started <= first_output <= finished, (kind, result[kind])
    assert 0 < result["docker_run_rm_floor"]["p50_ms"] < 120_000
    for step in STEPS:
        assert result["warm"][step]["p50_ms"] < result["cold"][step]["p50_ms"], (step, result)
    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert len(summary) == 1
    assert summary[0].startswith("- ")
    assert "warm_pool n=2" in summary[0]
