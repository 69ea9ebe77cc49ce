"""bench/work_queue.py in ``--smoke`` mode (2 rounds of 100 jobs): it runs end to end on a real
ephemeral PostgreSQL with both queues (codeyard's and procrastinate's), drains every job and
writes its JSON and summary line. The rates are the bench's business: only their sanity is
checked here, never the >= 1.0x target."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import services
from tests.bench_support import run_bench_smoke


@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_the_queue_bench_runs_and_writes_sane_figures(tmp_path: Path) -> None:
    if services.find_postgres_bindir() is None:
        services.service_unavailable("PostgreSQL", "no initdb found")
    result = run_bench_smoke("work_queue", tmp_path, timeout_s=280)
    assert (result["rounds"], result["jobs_per_round"]) == (2, 100)
    for system in ("codeyard", "procrastinate"):
        rates = result[system]["jobs_per_s"]
        assert len(rates["samples_jobs_per_s"]) == 2
        assert 0 < rates["p50_jobs_per_s"] <= rates["p95_jobs_per_s"], (system, rates)
        latency = result[system]["claim_complete"]
        assert 0 < latency["p50_ms"] <= latency["p95_ms"] < 60_000, (system, latency)
    ratio = result["ratio_codeyard_over_procrastinate_p50"]
    assert ratio > 0
    assert result["target"] == {"ratio_min": 1.0, "met": ratio >= 1.0}
    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert len(summary) == 1
    assert summary[0].startswith("- ")
    assert "work_queue rounds=2 jobs=100" in summary[0]
