"""bench/soak_faults.py in ``--smoke`` mode: one fault of each kind under real work through
``codeyard serve`` on Docker, then the invariants read back from its JSON: every command
answered exactly once, every run with exactly one result, no container or process of the
soak's owner left, every fault recovered from."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from tests import services
from tests.bench_support import run_bench_smoke

pytestmark = [
    pytest.mark.docker,
    pytest.mark.faults,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.slow,
    # The bench builds the worker image first when this checkout's is missing (minutes, as
    # the claude_worker_image fixture); the smoke itself takes under a minute.
    pytest.mark.timeout(900),
]
KINDS = {"manager_kill9", "worker_kill", "redis_restart", "postgres_restart"}


def test_the_soak_faults_bench_smoke_keeps_its_invariants(tmp_path: Path) -> None:
    if services.find_redis_server() is None:
        services.service_unavailable("Redis", "the redis-server binary is not installed")
    if services.find_postgres_bindir() is None:
        services.service_unavailable("PostgreSQL", "no initdb found")
    try:
        services.docker_client().close()
    except docker.errors.DockerException as exc:
        services.service_unavailable("Docker", f"the engine does not answer ({exc})")
    result = run_bench_smoke("soak_faults", tmp_path, timeout_s=880, clean_env=True)
    assert isinstance(result["seed"], int)
    assert result["smoke"] is True
    # One fault of each kind was injected and the service recovered from each.
    assert {f["kind"] for f in result["faults"]} == KINDS
    for kind, figures in result["per_kind"].items():
        assert (figures["injected"], figures["not_recovered"]) == (1, 0), (kind, figures)
        assert figures["recovery_max_s"] > 0
    # Every command answered exactly once, real work done, every run with one result.
    assert result["commands"] > 10
    assert result["unanswered"] == []
    assert result["answered_twice_or_more"] == {}
    assert sum(result["reply_codes"].values()) == result["commands"]
    assert result["runs"] >= 2
    assert result["run_outcomes"].get("success", 0) >= 1
    assert result["runs_without_one_result"] == {}
    assert result["orphan_containers"] == []
    assert result["orphan_processes"] == []
    # The manager's RSS was sampled, across the restart (two processes).
    assert result["rss"]["processes"] == 2
    assert 0 < result["rss"]["first_mb"] <= result["rss"]["max_mb"]
    assert not any(result["invariants_failed"].values()), result["invariants_failed"]
    summary = (tmp_path / "summary.md").read_text()
    assert f"soak_faults: seed {result['seed']}," in summary
    assert "invariants failed: none" in summary
