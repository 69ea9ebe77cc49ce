"""Issue #9 fuzzing soak: the tests/faults fuzzing with soak sizes.

* **Commands**: ``--commands`` (default 10,000) hypothesis-made entries (the strategies of
  tests/faults/command_fuzz.py: junk, invalid and wrong-typed commands, huge and binary
  fields, valid commands without a reply stream), published in batches of 50 to
  ``worker:commands`` of a manager on the local-process runtime (built like
  tests/integration/manager_local_support.py) on an ephemeral Redis. Each batch is checked
  like the test does (every entry answered by a typed reply or dead-lettered), then the
  manager must still answer a ``list``. Figure: commands answered per second (publish to
  last answer of each batch; a batch's entries are published one by one, unpipelined,
  which is part of the time), p50/p95 of the batch times.
* **Parsers**: ``--parser-examples`` (default 2,000) examples per parser of each of the
  two properties of tests/faults/test_parser_fuzz.py (random bytes, mutated recorded
  lines). A failure is the shrunk counterexample, written to the result.

Baseline: none applies (this is a robustness soak, not a speed target); the figure is
reported so that a slowdown shows between runs. ``--smoke``: 200 commands, 50 examples.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._common import RESULTS_DIR, header, setup_path, stats, write_result  # noqa: E402

setup_path()

import anyio  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from codeyard.testing.model_server import ModelServer, Scenario  # noqa: E402
from tests.contract.test_command_service import Garbage  # noqa: E402
from tests.faults import command_fuzz, parser_fuzz  # noqa: E402
from tests.integration.manager_local_support import local_config, local_manager  # noqa: E402
from tests.services import find_redis_server, start_redis  # noqa: E402

NAME = "soak_fuzz"
BATCH = 50
_SOAK = settings(
    deadline=None,
    database=None,
    phases=[Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


def draw_batches(count: int) -> list[list[Garbage]]:
    """``count`` entries (rounded up to whole batches) drawn by hypothesis."""
    batches: list[list[Garbage]] = []
    wanted = -(-count // BATCH)

    @settings(_SOAK, max_examples=wanted, phases=[Phase.generate])
    @given(batch=st.lists(command_fuzz.entries, min_size=BATCH, max_size=BATCH))
    def collect(batch: list[Garbage]) -> None:
        if len(batches) < wanted:
            batches.append(batch)

    while len(batches) < wanted:  # hypothesis may stop early on a small search space
        collect()
    return batches


async def soak_commands(count: int) -> dict[str, Any]:
    binary = find_redis_server()
    if binary is None:
        raise SystemExit("redis-server is not installed: run scripts/dev setup")
    batches = draw_batches(count)
    redis = start_redis(binary)
    try:
        with tempfile.TemporaryDirectory(prefix="codeyard-soak-") as tmp:
            async with ModelServer(Scenario.text("ok")) as server:
                config = local_config(redis.url, server, "soak-fuzz")
                async with local_manager(redis.url, config, tmp_path=Path(tmp)) as m:
                    times: list[float] = []
                    sent_total = dead_total = 0
                    began = time.monotonic()
                    for batch in batches:
                        sent = await command_fuzz.publish(m.bus, batch)
                        times.append(await command_fuzz.check_answers(m.bus, sent))
                        sent_total += sent.count
                        dead_total += len(sent.dead)
                    total_s = time.monotonic() - began
                    still = await m.client.list()
    finally:
        redis.stop()
    return {
        "commands": sent_total,
        "dead_lettered": dead_total,
        "replied": sent_total - dead_total,
        "total_s": round(total_s, 2),
        "answered_per_s": round(sent_total / total_s, 1),
        "batch": BATCH,
        "batch_time": stats([t * 1000 for t in times], keep_samples=False),
        "still_serving": still == [],
    }


def _properties(target: parser_fuzz.Target, examples: int) -> list[Callable[[], None]]:
    """The two properties of tests/faults/test_parser_fuzz.py for ``target``."""

    @settings(_SOAK, max_examples=examples)
    @given(data=st.data())
    def blobs(data: st.DataObject) -> None:
        parser_fuzz.check(target, data.draw(parser_fuzz.blobs(target)))

    @settings(_SOAK, max_examples=examples)
    @given(data=st.data())
    def mutants(data: st.DataObject) -> None:
        parser_fuzz.check(target, data.draw(parser_fuzz.mutants(target)))

    return [blobs, mutants]


def soak_parsers(examples: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for target in parser_fuzz.TARGETS:
        failures: list[str] = []
        began = time.monotonic()
        for prop in _properties(target, examples):
            try:
                prop()
            except Exception:  # the shrunk counterexample: reported, the soak goes on
                failures.append(traceback.format_exc(limit=3)[-2000:])
        out[target.name] = {
            "examples": 2 * examples,
            "seconds": round(time.monotonic() - began, 2),
            "failures": failures,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=10_000)
    parser.add_argument("--parser-examples", type=int, default=2_000)
    parser.add_argument("--smoke", action="store_true", help="200 commands, 50 examples")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    if args.smoke:
        args.commands, args.parser_examples = 200, 50
    parsers = soak_parsers(args.parser_examples)
    commands = anyio.run(soak_commands, args.commands)
    failed = sorted(name for name, r in parsers.items() if r["failures"])
    result = header(NAME, smoke=args.smoke, commands=commands, parsers=parsers)
    line = (
        f"- {NAME}: {commands['commands']} fuzzed commands, all answered, "
        f"{commands['answered_per_s']}/s (batch of {BATCH} p50 "
        f"{commands['batch_time']['p50_ms']} ms); parsers: {2 * args.parser_examples} "
        f"examples each, failing: {', '.join(failed) or 'none'}"
    )
    write_result(args.out_dir, NAME, result, line)
    if failed or not commands["still_serving"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
