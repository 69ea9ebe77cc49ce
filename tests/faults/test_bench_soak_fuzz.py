"""bench/soak_fuzz.py in ``--smoke`` mode: it runs, every fuzzed command is answered, no
parser fails, and the JSON and summary line are written with sane figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import services
from tests.bench_support import run_bench_smoke

pytestmark = [pytest.mark.faults, pytest.mark.redis]


@pytest.mark.timeout(180)
def test_the_soak_fuzz_bench_smoke_writes_sane_results(tmp_path: Path) -> None:
    if services.find_redis_server() is None:
        services.service_unavailable("Redis", "the redis-server binary is not installed")
    result = run_bench_smoke("soak_fuzz", tmp_path, timeout_s=170)
    commands = result["commands"]
    assert commands["commands"] == 200
    assert commands["replied"] + commands["dead_lettered"] == 200
    assert commands["answered_per_s"] > 0
    assert commands["still_serving"] is True
    assert set(result["parsers"]) == {
        "claude", "codex", "droid", "gemini", "opencode", "opencode-serve",
    }  # fmt: skip
    assert all(not p["failures"] and p["examples"] == 100 for p in result["parsers"].values())
    assert "soak_fuzz: 200 fuzzed commands" in (tmp_path / "summary.md").read_text()
