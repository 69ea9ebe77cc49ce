"""Event-path benchmark: CLI stdout line -> Redis -> consumer, against raw redis-py.

Issue #8 item 4: "CLI stdout line -> Redis -> consumer, events/s and p99 latency vs raw
pipelined XADD/XREAD of the same payloads. Target >= 50 % of raw, p99 < 10 ms". Run from
the repo root::

    uv run python bench/event_path.py            # 10k events x 5 repetitions
    uv run python bench/event_path.py --smoke    # 300 events x 2 (the test suite runs this)

An ephemeral ``redis-server`` (tests/services/redis.py). Paths, each one repetition after
the other on a fresh stream, consumer in a separate process (as a client is):

- ``codeyard``: the producer does what the worker wrapper does per CLI stdout line:
  ``ClaudeStreamParser.feed`` (recorded claude transcripts, a fresh parser per run), stamp
  with an ``EventSequencer`` (``AgentEvent.ts`` = the producer timestamp), then hands
  ``{event: model_dump_json(), type}`` to the wrapper's ``BatchingPublisher``
  (src/app/event_publisher.py), whose task sends what is buffered with one
  ``RedisEventBus.publish_many`` (MULTI/EXEC); a flush at the end.
  The consumer reads with ``RedisEventBus.read(block_s=...)`` and decodes each entry with
  ``AgentEvent.model_validate_json`` (as ``CodeyardClient.events`` does).
- ``raw_pipelined`` (the baseline): the *same* event JSON strings, precomputed, sent with
  redis-py pipelined ``XADD`` (``--batch`` per pipeline) plus a ``t`` field (producer
  time); the consumer is a bare ``XREAD BLOCK`` loop reading ``t``.
- ``raw_sequential`` (diagnostic only): the raw producer with one awaited ``XADD`` per
  event, i.e. the round trip per event the codeyard path paid before it batched.

- ``codeyard_paced`` / ``raw_paced``: the codeyard and the raw (one XADD each) producers
  at a steady ``--rate`` (default 200 events/s, a busy CLI with partial messages) for a
  tenth of the events: the latency target is read here. At saturation (the modes above)
  the consumer falls behind and the latency measures its queue, not the path.

events/s = events / (producer start -> last event received); latency = consumer receive
(wall clock, after the read returned) - producer timestamp, same host. Targets: codeyard
/ raw_pipelined events/s (p50) >= 0.5; codeyard_paced p99 < 10 ms.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import sys
import time
import uuid
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._common import header, met, percentile, setup_path, stats_p99, write_result  # noqa: E402

setup_path()

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402

from bench.parser import TRANSCRIPTS, load_runs  # noqa: E402
from codeyard.adapters.claude.parser import ClaudeStreamParser  # noqa: E402
from codeyard.adapters.cli.types import Parsed  # noqa: E402
from codeyard.adapters.redis.event_bus import RedisEventBus  # noqa: E402
from codeyard.app.event_publisher import BatchingPublisher  # noqa: E402
from codeyard.domain.events import AgentEvent, EventSequencer  # noqa: E402
from codeyard.domain.worker_io import EVENT_FIELD, TYPE_FIELD  # noqa: E402
from tests.services import find_redis_server, start_redis  # noqa: E402

NAME = "event_path"
TARGET_RATIO = 0.5
TARGET_P99_MS = 10.0
MODES = ("codeyard", "raw_pipelined", "raw_sequential")
#: Latency at a steady rate (a CLI's pace), not at saturation where queueing dominates.
PACED_MODES = ("codeyard_paced", "raw_paced")
READ_COUNT = 1000
DEADLINE_S = 300.0


def parsed_of(runs: list[list[str]], n: int) -> Iterator[tuple[Parsed, EventSequencer]]:
    """``n`` parsed payloads from the transcripts (a fresh parser and sequencer per run),
    each with the sequencer that stamps it, as the run loop has them."""
    made = 0
    while True:
        for i, run in enumerate(runs):
            parser = ClaudeStreamParser()
            sequencer = EventSequencer(provider="claude", worker_id="bench", run_id=f"run-{i}")
            for line in run:
                for parsed in parser.feed(line):
                    yield parsed, sequencer
                    made += 1
                    if made >= n:
                        return


def events_of(runs: list[list[str]], n: int) -> Iterator[AgentEvent]:
    """``n`` stamped events (stamped now)."""
    for parsed, sequencer in parsed_of(runs, n):
        yield sequencer.stamp(parsed.payload, raw=parsed.raw)


# --- consumer (a separate process) ------------------------------------------------------------


def consumer_main(url: str, conn: Connection) -> None:
    """Child process, one per bench run (spawning per repetition costs seconds of imports):
    per job ``(stream, mode, n)`` received, "ready" once connected, then read ``n`` entries
    and send back (latencies ms, last receive wall time); ``None`` ends it."""
    while (job := conn.recv()) is not None:
        stream, mode, n = job
        conn.send(anyio.run(_consume, url, stream, mode, n, conn))


async def _consume(url: str, stream: str, mode: str, n: int, conn: Connection) -> Any:
    latencies: list[float] = []
    last = "0-0"
    client = aioredis.Redis.from_url(url, decode_responses=True)
    bus = RedisEventBus(client)
    await client.ping()
    conn.send("ready")
    with anyio.fail_after(DEADLINE_S):
        while len(latencies) < n:
            if mode.startswith("codeyard"):
                messages = await bus.read(stream, after=last, count=READ_COUNT, block_s=1.0)
                now = time.time()
                for m in messages:
                    event = AgentEvent.model_validate_json(m.fields[EVENT_FIELD])
                    latencies.append((now - event.ts.timestamp()) * 1000)
                    last = m.id
            else:
                reply: Any = await client.xread({stream: last}, count=READ_COUNT, block=1000)
                now = time.time()
                for _key, entries in reply or ():
                    for entry_id, fields in entries:
                        latencies.append((now - float(fields["t"])) * 1000)
                        last = entry_id
    await bus.aclose()
    return latencies, time.time()


# --- producers --------------------------------------------------------------------------------


class Pacer:
    """Event ``i`` goes out at ``start + i * interval`` (no pacing when interval is 0)."""

    def __init__(self, interval: float) -> None:
        self.interval, self.start, self.i = interval, time.perf_counter(), 0

    async def wait(self) -> None:
        if self.interval:
            await anyio.sleep(max(self.start + self.i * self.interval - time.perf_counter(), 0))
            self.i += 1


async def produce_codeyard(
    bus: RedisEventBus, stream: str, runs: list[list[str]], n: int, pacer: Pacer
) -> None:
    publisher = BatchingPublisher(bus, stream)  # what the worker wrapper publishes through
    async with anyio.create_task_group() as tg:
        await tg.start(publisher.run)
        for parsed, sequencer in parsed_of(runs, n):
            await pacer.wait()  # before stamping: the wait is not part of the latency
            event = sequencer.stamp(parsed.payload, raw=parsed.raw)
            fields = {EVENT_FIELD: event.model_dump_json(), TYPE_FIELD: event.payload.type}
            await publisher.send(fields)
        await publisher.flush()
        tg.cancel_scope.cancel()


async def produce_raw(
    client: aioredis.Redis, stream: str, payloads: list[tuple[str, str]], batch: int, pacer: Pacer
) -> None:
    for start in range(0, len(payloads), batch):
        await pacer.wait()
        pipe = client.pipeline(transaction=False)
        for event_json, kind in payloads[start : start + batch]:
            fields = {EVENT_FIELD: event_json, TYPE_FIELD: kind, "t": repr(time.time())}
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
        await pipe.execute()


async def one_rep(
    consumer: Connection,
    mode: str,
    runs: list[list[str]],
    payloads: list[tuple[str, str]],
    *,
    url: str,
    batch: int,
    rate: float,
) -> tuple[float, list[float]]:
    """One repetition of ``mode`` on a fresh stream: (events/s, latencies ms)."""
    paced = mode.endswith("_paced")
    if paced:
        payloads = payloads[: max(len(payloads) // 10, 100)]
    n = len(payloads)
    stream = f"bench:{mode}:{uuid.uuid4().hex[:8]}"
    consumer.send((stream, mode, n))
    client = aioredis.Redis.from_url(url, decode_responses=True)
    bus = RedisEventBus(client)
    try:
        with anyio.fail_after(DEADLINE_S):
            ready = await anyio.to_thread.run_sync(consumer.recv)
            if ready != "ready":
                raise RuntimeError(f"consumer: {ready!r}")
            began = time.time()
            pacer = Pacer(1 / rate if paced else 0.0)
            if mode.startswith("codeyard"):
                await produce_codeyard(bus, stream, runs, n, pacer)
            else:
                size = batch if mode == "raw_pipelined" else 1
                await produce_raw(client, stream, payloads, size, pacer)
            latencies, last_received = await anyio.to_thread.run_sync(consumer.recv)
        await client.delete(stream)
    finally:
        await bus.aclose()
    return n / (last_received - began), latencies


async def run_bench(events: int, repetitions: int, batch: int, rate: float) -> dict[str, Any]:
    binary = find_redis_server()
    if binary is None:
        raise SystemExit("redis-server is not installed (scripts/dev setup installs it)")
    runs = load_runs(TRANSCRIPTS, 1)
    payloads: list[tuple[str, str]] = [
        (e.model_dump_json(), e.payload.type) for e in events_of(runs, events)
    ]
    server = await anyio.to_thread.run_sync(start_redis, binary)
    ctx = multiprocessing.get_context("spawn")
    consumer, child = ctx.Pipe()
    proc = ctx.Process(target=consumer_main, args=(server.url, child), daemon=True)
    proc.start()
    rates: dict[str, list[float]] = {m: [] for m in MODES + PACED_MODES}
    latencies: dict[str, list[float]] = {m: [] for m in MODES + PACED_MODES}
    try:
        for rep in range(repetitions):
            order = MODES + PACED_MODES
            for mode in order if rep % 2 == 0 else tuple(reversed(order)):
                got, lat = await one_rep(
                    consumer, mode, runs, payloads, url=server.url, batch=batch, rate=rate
                )
                rates[mode].append(got)
                latencies[mode].extend(lat)
            print(
                f"rep {rep + 1}/{repetitions}: "
                + ", ".join(f"{m} {rates[m][-1]:,.0f} ev/s" for m in MODES + PACED_MODES),
                file=sys.stderr,
            )
    finally:
        consumer.send(None)
        await anyio.to_thread.run_sync(proc.join, 10)
        if proc.is_alive():
            proc.kill()
        server.stop()
    return report(
        events,
        repetitions,
        batch=batch,
        rate=rate,
        payloads=payloads,
        rates=rates,
        latencies=latencies,
    )


def report(
    events: int,
    repetitions: int,
    *,
    batch: int,
    rate: float,
    payloads: list[tuple[str, str]],
    rates: dict[str, list[float]],
    latencies: dict[str, list[float]],
) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {
        m: {
            "p50_events_per_s": round(percentile(rates[m], 50)),
            "p95_events_per_s": round(percentile(rates[m], 5)),  # the slow end, as in parser
            "samples_events_per_s": [round(r) for r in rates[m]],
            "latency": stats_p99(latencies[m]),
        }
        for m in MODES + PACED_MODES
    }
    ratio = paths["codeyard"]["p50_events_per_s"] / paths["raw_pipelined"]["p50_events_per_s"]
    p99 = paths["codeyard_paced"]["latency"]["p99_ms"]
    sizes = [len(p[0]) for p in payloads]
    return header(
        NAME,
        repetitions=repetitions,
        events=events,
        pipeline_batch=batch,
        paced_rate_events_per_s=rate,
        paced_events=max(events // 10, 100),
        event_json_bytes={"mean": round(sum(sizes) / len(sizes)), "max": max(sizes)},
        clock="wall clock (time.time), producer and consumer processes on one host",
        paths=paths,
        ratio_codeyard_over_raw_p50=round(ratio, 3),
        target={
            "ratio_min": TARGET_RATIO,
            "p99_max_ms": TARGET_P99_MS,
            "ratio_met": ratio >= TARGET_RATIO,
            "p99_met": p99 < TARGET_P99_MS,
        },
    )


def summary_line(result: dict[str, Any]) -> str:
    paths, target = result["paths"], result["target"]
    parts = [
        f"{m} {paths[m]['p50_events_per_s']:,} ev/s p99 {paths[m]['latency']['p99_ms']:.1f} ms"
        for m in MODES + PACED_MODES
    ]
    return (
        f"- {result['measured_at']} event_path n={result['repetitions']} x {result['events']} "
        f"events: {'; '.join(parts)}; codeyard/raw x{result['ratio_codeyard_over_raw_p50']}; "
        f"target >= {TARGET_RATIO:.0%} of raw: {met(target['ratio_met'])}, "
        f"p99 < {TARGET_P99_MS:.0f} ms: {met(target['p99_met'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).split("\n")[0])
    parser.add_argument("-n", "--repetitions", type=int, default=5)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100, help="XADDs per raw pipeline")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s of the paced runs")
    parser.add_argument("--smoke", action="store_true", help="300 events, 2 repetitions")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    events, reps = (300, 2) if args.smoke else (args.events, args.repetitions)
    result = anyio.run(run_bench, events, reps, args.batch, args.rate)
    write_result(args.out_dir, NAME, result, summary_line(result))


if __name__ == "__main__":
    main()
