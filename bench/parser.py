"""Parser benchmark: claude stream-json parse + normalize against plain ``json.loads``.

Issue #8 item 3: "stream-json parse + normalize lines/s vs plain json.loads of the same
lines. Target >= 1.0x". Run from the repo root::

    uv run python bench/parser.py              # ~100k lines x 7 repetitions
    uv run python bench/parser.py --smoke      # ~2k lines x 2 (the test suite runs this)
    uv run python bench/parser.py --profile    # + cProfile of one parser pass to stderr

Workload: the recorded claude 2.1.330 transcripts (tests/fixtures/transcripts/claude, copies
of /work/shared/agent-transcripts/claude), each transcript one run fed to a fresh
``ClaudeStreamParser`` (the parser is per run, as in the run loop), the whole set repeated
until ``--lines`` lines. The baseline is ``json.loads`` of exactly the same lines. Each
repetition times both passes back to back (order alternating), so they share the
machine's load; the figure is lines/s, p50/p95 over the repetitions, and the ratio of the
p50s (parser / json.loads).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._common import header, met, percentile, setup_path, write_result  # noqa: E402

setup_path()

from codeyard.adapters.claude.parser import ClaudeStreamParser  # noqa: E402

NAME = "parser"
TARGET_RATIO = 1.0
TRANSCRIPTS = ROOT / "tests" / "fixtures" / "transcripts" / "claude"

Runs = list[list[str]]


def load_runs(directory: Path, lines: int) -> Runs:
    """The transcripts' non-blank lines, one list per run, repeated to >= ``lines`` lines."""
    files = sorted(directory.glob("*.stream.jsonl"))
    if not files:
        raise SystemExit(f"no *.stream.jsonl transcripts in {directory}")
    transcripts = [[ln for ln in f.read_text().splitlines() if ln.strip()] for f in files]
    runs: Runs = []
    total = 0
    while total < lines:
        for transcript in transcripts:
            runs.append(transcript)
            total += len(transcript)
    return runs


def json_pass(runs: Runs) -> int:
    """The baseline: ``json.loads`` of every line; returns the line count."""
    loads = json.loads
    n = 0
    for run in runs:
        for line in run:
            loads(line)
        n += len(run)
    return n


def parser_pass(runs: Runs) -> int:
    """Parse + normalize every line, one fresh parser per run; returns the payload count."""
    payloads = 0
    for run in runs:
        feed = ClaudeStreamParser().feed
        for line in run:
            payloads += len(feed(line))
    return payloads


def timed(fn: Callable[[Runs], int], runs: Runs) -> float:
    began = time.perf_counter()
    fn(runs)
    return time.perf_counter() - began


def profile_top(runs: Runs, limit: int = 25) -> str:
    """cProfile of one parser pass, by own time (where the time actually goes)."""
    profiler = cProfile.Profile()
    profiler.runcall(parser_pass, runs)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(limit)
    return out.getvalue()


def rate_stats(rates: list[float]) -> dict[str, Any]:
    """Lines/s per repetition. "p95" is the 95th percentile of *speed* loss: the 5th
    percentile rate, so both figures read "at least this fast in N % of repetitions"."""
    return {
        "p50_lines_per_s": round(percentile(rates, 50)),
        "p95_lines_per_s": round(percentile(rates, 5)),
        "p50_us_per_line": round(1e6 / percentile(rates, 50), 3),
        "samples_lines_per_s": [round(r) for r in rates],
    }


def run_bench(lines: int, repetitions: int, directory: Path) -> dict[str, Any]:
    runs = load_runs(directory, lines)
    n_lines = sum(len(r) for r in runs)
    payloads = parser_pass(runs[: len(runs) // 4 + 1])  # warm-up (imports, caches)
    json_pass(runs[: len(runs) // 4 + 1])
    payloads = parser_pass(runs)
    json_rates: list[float] = []
    parser_rates: list[float] = []
    for rep in range(repetitions):
        order = [(json_pass, json_rates), (parser_pass, parser_rates)]
        for fn, rates in order if rep % 2 == 0 else reversed(order):
            rates.append(n_lines / timed(fn, runs))
        print(
            f"rep {rep + 1}/{repetitions}: json.loads {json_rates[-1]:,.0f} lines/s, "
            f"parser {parser_rates[-1]:,.0f} lines/s",
            file=sys.stderr,
        )
    ratio = percentile(parser_rates, 50) / percentile(json_rates, 50)
    return header(
        NAME,
        repetitions=repetitions,
        lines=n_lines,
        payloads=payloads,
        transcripts=sorted(p.name for p in directory.glob("*.stream.jsonl")),
        parser="codeyard.adapters.claude.parser.ClaudeStreamParser.feed",
        baseline="json.loads",
        parser_rate=rate_stats(parser_rates),
        json_loads_rate=rate_stats(json_rates),
        ratio_parser_over_json_p50=round(ratio, 3),
        target={"ratio_min": TARGET_RATIO, "met": ratio >= TARGET_RATIO},
    )


def summary_line(result: dict[str, Any]) -> str:
    p, j = result["parser_rate"], result["json_loads_rate"]
    return (
        f"- {result['measured_at']} parser n={result['repetitions']} x {result['lines']} lines: "
        f"claude parse+normalize p50 {p['p50_lines_per_s']:,} lines/s "
        f"({p['p50_us_per_line']} us/line) vs json.loads {j['p50_lines_per_s']:,} lines/s "
        f"({j['p50_us_per_line']} us/line): x{result['ratio_parser_over_json_p50']}; "
        f"target >= x{TARGET_RATIO}: {met(result['target']['met'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).split("\n")[0])
    parser.add_argument("-n", "--repetitions", type=int, default=7)
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--smoke", action="store_true", help="~2k lines, 2 repetitions")
    parser.add_argument("--profile", action="store_true", help="cProfile one parser pass")
    parser.add_argument("--transcripts", type=Path, default=TRANSCRIPTS)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    lines, reps = (2_000, 2) if args.smoke else (args.lines, args.repetitions)
    result = run_bench(lines, reps, args.transcripts)
    if args.profile:
        print(profile_top(load_runs(args.transcripts, lines)), file=sys.stderr)
    write_result(args.out_dir, NAME, result, summary_line(result))


if __name__ == "__main__":
    main()
