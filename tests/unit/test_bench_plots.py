"""bench/plots.py: one PNG per result JSON holding p50/p95 figures, whatever its shape;
files without figures or unreadable are skipped without failing the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLOTS = ROOT / "bench" / "plots.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == PNG_MAGIC, path
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")


def test_every_result_with_figures_gets_a_png_and_the_rest_are_skipped(tmp_path: Path) -> None:
    results, out = tmp_path / "results", tmp_path / "png"
    results.mkdir()
    nested = {
        "name": "nested",
        "measured_at": "2026-01-01T00:00:00+00:00",
        "cold": {"ready": {"p50_ms": 900.0, "p95_ms": 1800.0, "samples_ms": [900.0]}},
        "warm": {"ready": {"p50_ms": 9.0, "p95_ms": 27.0}},
        "rates": [{"p50_jobs_per_s": 500, "p95_jobs_per_s": 900}],
        "target": {"met": False},
    }
    (results / "nested.json").write_text(json.dumps(nested))
    (results / "flat.json").write_text(json.dumps({"name": "flat", "p50_s": 3, "p95_s": 4}))
    (results / "empty.json").write_text(json.dumps({"name": "empty", "p50_ms": "n/a"}))
    (results / "broken.json").write_text("{not json")
    (results / "summary.md").write_text("- not a result\n")

    done = subprocess.run(
        [sys.executable, str(PLOTS), "--results-dir", str(results), "--out-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["flat.png", "nested.png"]
    assert done.stdout.split() == [str(out / "flat.png"), str(out / "nested.png")]
    assert "skipping broken.json" in done.stderr
    assert "skipping empty.json: no p50/p95 figures" in done.stderr
    # Two panels (ms and jobs/s) make the nested plot taller than the one-panel flat one.
    flat_w, flat_h = _png_size(out / "flat.png")
    nested_w, nested_h = _png_size(out / "nested.png")
    assert flat_w == nested_w == 900
    assert nested_h > flat_h > 0
