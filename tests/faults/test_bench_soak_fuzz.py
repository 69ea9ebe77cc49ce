"""bench/soak_fuzz.py in ``--smoke`` mode: it runs, every fuzzed command is answered, no
parser fails, and the JSON and summary line are written with sane figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests import services

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "soak_fuzz.py"

pytestmark = [pytest.mark.faults, pytest.mark.redis]


@pytest.mark.timeout(180)
def test_the_soak_fuzz_bench_smoke_writes_sane_results(tmp_path: Path) -> None:
    if services.find_redis_server() is None:
        services.service_unavailable("Redis", "the redis-server binary is not installed")
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "soak_fuzz.json").read_text())
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
