"""bench/parser.py in ``--smoke`` mode: it runs, writes its JSON and its summary line, and
the figures are sane (positive rates, one payload at least per line). The target
(parser >= json.loads) is the bench's to report, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "parser.py"


@pytest.mark.timeout(120)
def test_the_parser_bench_smoke_writes_sane_results(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    result = json.loads((tmp_path / "parser.json").read_text())
    assert result["name"] == "parser"
    assert result["repetitions"] == 2
    assert result["lines"] >= 2_000
    assert result["payloads"] > 0
    for path in ("parser_rate", "json_loads_rate"):
        rates = result[path]["samples_lines_per_s"]
        assert len(rates) == 2
        assert all(rate > 0 for rate in rates)
        assert result[path]["p50_lines_per_s"] >= result[path]["p95_lines_per_s"] > 0
    assert result["ratio_parser_over_json_p50"] > 0
    assert isinstance(result["target"]["met"], bool)

    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert len(summary) == 1
    assert summary[0].startswith("- ")
    assert " parser n=2 " in summary[0]
    assert summary[0].endswith(("met", "missed"))
