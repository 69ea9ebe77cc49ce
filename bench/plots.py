"""PNG plots of the benchmark results: one ``<name>.png`` per ``<results>/<name>.json``.

Run from the repo root (``scripts/dev bench`` runs it after the benchmarks)::

    uv run python bench/plots.py                          # bench/results/*.json
    uv run python bench/plots.py --results-dir DIR --out-dir DIR

The result files differ per bench, so the plot is generic: every object in the JSON that
holds a ``p50_<unit>`` and a ``p95_<unit>`` figure becomes a pair of horizontal bars named
by its path in the JSON (``warm.ready``, ``codeyard.jobs_per_s``), one panel per unit, so a
figure and its baseline (same unit, by the bench conventions) sit next to each other. A
JSON with no such figure (or unreadable) is skipped with a note on stderr, never an error:
plotting must not fail a bench run.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display, no GUI toolkit

import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
BAR_HEIGHT = 0.38


@dataclass(frozen=True)
class Figure:
    """One p50/p95 pair found in a result file."""

    label: str
    unit: str
    p50: float
    p95: float


def figures(node: Any, path: str = "") -> list[Figure]:
    """Every p50/p95 pair under ``node``, depth first, in the JSON's order."""
    found: list[Figure] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if not (isinstance(key, str) and key.startswith("p50_")):
                continue
            unit = key.removeprefix("p50_")
            other = node.get(f"p95_{unit}")
            if _number(value) and _number(other):
                found.append(Figure(path or "(top)", unit, float(value), float(other)))
        for key, value in node.items():
            if isinstance(value, dict | list):
                found.extend(figures(value, f"{path}.{key}" if path else str(key)))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, dict):
                found.extend(figures(item, f"{path}[{index}]"))
    return found


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def plot(result: dict[str, Any], found: list[Figure], out: Path) -> None:
    units = list(dict.fromkeys(f.unit for f in found))
    rows = [[f for f in found if f.unit == unit] for unit in units]
    height = sum(max(len(r), 1) * 0.45 + 0.9 for r in rows) + 0.6
    fig, axes = plt.subplots(len(units), 1, figsize=(9, height), squeeze=False)
    for ax, unit, row in zip(axes[:, 0], units, rows, strict=True):
        ys = range(len(row))
        ax.barh([y - BAR_HEIGHT / 2 for y in ys], [f.p50 for f in row], BAR_HEIGHT, label="p50")
        ax.barh([y + BAR_HEIGHT / 2 for y in ys], [f.p95 for f in row], BAR_HEIGHT, label="p95")
        ax.set_yticks(list(ys), [f.label for f in row])
        ax.invert_yaxis()  # the JSON's order, top to bottom
        ax.set_xlabel(unit.replace("_", " "))
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    title = f"{result.get('name', out.stem)}  ({result.get('measured_at', 'undated')})"
    target = result.get("target")
    if isinstance(target, dict) and "met" in target:
        title += f"  target {'met' if target['met'] else 'missed'}"
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_all(results_dir: Path, out_dir: Path) -> list[Path]:
    """Plot every ``*.json`` of ``results_dir`` into ``out_dir``; the PNGs written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(results_dir.glob("*.json")):
        try:
            result = json.loads(source.read_text())
        except (OSError, ValueError) as exc:
            print(f"plots: skipping {source.name}: {exc}", file=sys.stderr)
            continue
        found = figures(result) if isinstance(result, dict) else []
        if not found:
            print(f"plots: skipping {source.name}: no p50/p95 figures", file=sys.stderr)
            continue
        target = out_dir / f"{source.stem}.png"
        plot(result, found, target)
        written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "plots").split("\n")[0])
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--out-dir", type=Path, help="default: the results folder")
    args = parser.parse_args()
    for path in plot_all(args.results_dir, args.out_dir or args.results_dir):
        print(path)


if __name__ == "__main__":
    main()
