"""bench/spawn.py in ``--smoke`` mode (2 repetitions): it runs end to end on real Docker
and Redis and writes its JSON and summary line with sane figures.

Only sanity is asserted (positive, ordered, bounded); the x1.3 target is the bench's
business and is reported, never asserted. The first run on a checkout builds the claude
worker image (minutes; seconds when the layer cache is warm), hence the timeout.
"""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from tests import services
from tests.bench_support import run_bench_smoke

STEPS = ("first_event", "running")


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_spawn_bench_runs_and_writes_sane_figures(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    if services.find_redis_server() is None:
        services.service_unavailable("Redis", "the redis-server binary is not installed")
    result = run_bench_smoke("spawn", tmp_path, timeout_s=880, clean_env=True)
    assert result["name"] == "spawn"
    assert result["repetitions"] == 2
    for step in (*STEPS, "create_reply"):
        figures = result["cold"][step]
        assert len(figures["samples_ms"]) == 2
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] < 120_000, (step, figures)
    # The manager replies once the container has started, before the wrapper reports.
    for reply, first in zip(
        result["cold"]["create_reply"]["samples_ms"],
        result["cold"]["first_event"]["samples_ms"],
        strict=True,
    ):
        assert reply <= first + 50, result["cold"]  # 50 ms: reply read after TIME rounding
    assert 0 < result["docker_run_rm_floor"]["p50_ms"] < 120_000
    for step in STEPS:
        ratio = result["ratio_over_floor_p50"][step]
        assert ratio > 0
        assert isinstance(result["target"]["met"][step], bool)
    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert len(summary) == 1
    assert summary[0].startswith("- ")
    assert "spawn n=2" in summary[0]
