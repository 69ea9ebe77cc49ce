"""Running a bench script's ``--smoke`` mode from a test (tests/*/test_bench_*.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_bench_smoke(
    script: str, out_dir: Path, *, timeout_s: float, clean_env: bool = False
) -> dict[str, Any]:
    """Run ``bench/<script>.py --smoke --out-dir out_dir`` from the repo root, require exit
    0 (the output's tail in the message otherwise) and return its ``<script>.json``.

    ``clean_env``: without the caller's ``CODEYARD_*`` variables, for benches that build
    their own manager settings.
    """
    env = None
    if clean_env:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CODEYARD_")}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / f"{script}.py"),
            "--smoke",
            "--out-dir",
            str(out_dir),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads((out_dir / f"{script}.json").read_text())
    return result
