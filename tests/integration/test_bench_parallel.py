"""bench/parallel.py in ``--smoke`` mode (N = 2): two tasks run end to end on real Docker
and Redis (create with a prompt -> result -> delete) beside the docker-run floor, and the
JSON and summary line are written with sane figures.

Only sanity is asserted; the x1.2 and RSS targets are reported by the bench, never
asserted here. The first run on a checkout builds the claude worker image, hence the timeout.
"""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from tests import services
from tests.bench_support import run_bench_smoke


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_parallel_bench_runs_two_tasks_and_writes_sane_figures(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    if services.find_redis_server() is None:
        services.service_unavailable("Redis", "the redis-server binary is not installed")
    result = run_bench_smoke("parallel", tmp_path, timeout_s=880, clean_env=True)
    assert result["name"] == "parallel"
    assert result["sizes"] == [2]
    run = result["runs"]["2"]
    assert run["failures"] == []
    assert run["live_workers_at_rss"] == 2
    for step in ("create_reply", "result", "deleted"):
        assert len(run[step]["samples_ms"]) == 2, (step, run)
    # Each task's steps are in order, and the wall times bound them.
    assert run["create_reply"]["p95_ms"] <= run["result"]["p95_ms"] <= run["deleted"]["p95_ms"]
    assert run["results_wall_ms"] <= run["wall_ms"] < 600_000
    assert 0 < run["floor_wall_ms"] < 120_000
    assert run["ratio_over_floor"] > 0
    assert 0 < run["spawn_floor_wall_ms"] < 600_000
    assert run["ratio_over_spawn_floor"] > 0
    assert 10 < run["rss_mb"] < 4096
    assert result["target"]["rss_met"] is None  # judged at 50 workers only
    assert isinstance(result["target"]["ratio_met"]["2"], bool)
    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert len(summary) == 1
    assert summary[0].startswith("- ")
    assert "parallel: " in summary[0]
