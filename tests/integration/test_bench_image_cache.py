"""bench/image_cache.py in ``--smoke`` mode (20 hits, no cold build): it runs on real Docker
and Redis, writes its JSON and summary line with sane latencies. The first run on a checkout
builds the claude worker image (minutes; seconds when the layer cache is warm), hence the
timeout. The hit <= inspect target is reported by the bench, not asserted here."""

from __future__ import annotations

import shutil
from pathlib import Path

import docker
import pytest

from tests import services
from tests.bench_support import run_bench_smoke


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_image_cache_bench_runs_and_writes_sane_figures(
    docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    if services.find_redis_server() is None:
        services.service_unavailable("Redis", "the redis-server binary is not installed")
    if shutil.which("docker") is None:
        services.service_unavailable("the docker CLI", "not on PATH (the baseline uses it)")
    result = run_bench_smoke("image_cache", tmp_path, timeout_s=880)
    assert (result["repetitions"], result["cold_builds"]) == (20, 0)
    assert "cold_build" not in result
    for key in ("hit", "docker_image_inspect_cli", "docker_api_inspect"):
        figures = result[key]
        assert len(figures["samples_ms"]) == 20
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] < 60_000, (key, figures)
    # The image the hit path returned is the one the baselines inspected, and it exists.
    assert docker_client.images.get(result["image"]).tags
    assert result["target"]["met"] == (result["ratio_hit_over_cli_inspect_p50"] <= 1.0)
    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert len(summary) == 1
    assert summary[0].startswith("- ")
    assert "image_cache n=20" in summary[0]
