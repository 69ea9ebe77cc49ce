"""bench/event_path.py in ``--smoke`` mode on an ephemeral redis-server: it runs, every
path delivers every event, and the JSON and summary line are written with sane figures.
The targets (>= 50 % of raw, p99 < 10 ms) are the bench's to report, never asserted here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import services
from tests.bench_support import run_bench_smoke

MODES = ("codeyard", "raw_pipelined", "raw_sequential")
PACED = ("codeyard_paced", "raw_paced")


@pytest.mark.timeout(180)
def test_the_event_path_bench_smoke_writes_sane_results(tmp_path: Path) -> None:
    if services.find_redis_server() is None:
        services.service_unavailable("Redis", "the redis-server binary is not installed")
    result = run_bench_smoke("event_path", tmp_path, timeout_s=170)
    assert result["name"] == "event_path"
    assert result["events"] == 300
    for mode in MODES + PACED:
        path = result["paths"][mode]
        assert len(path["samples_events_per_s"]) == 2
        assert all(rate > 0 for rate in path["samples_events_per_s"])
        latency = path["latency"]
        # Every event of both repetitions was received (the paced runs send 100 each).
        assert latency["n"] == 2 * (100 if mode in PACED else 300)
        # Latencies are receive minus send on one host's clock: never (noticeably) negative.
        assert -1.0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert result["ratio_codeyard_over_raw_p50"] > 0
    assert set(result["target"]) >= {"ratio_met", "p99_met"}

    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert len(summary) == 1
    assert " event_path n=2 x 300 events: " in summary[0]
