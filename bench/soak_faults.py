"""Issue #9 fault soak: real work through ``codeyard serve`` while faults are injected.

The set-up of tests/faults (see tests/faults/soak_services.py): ``codeyard serve`` on
Docker with a durable, password-protected Redis (AOF, fsync always) and a private
PostgreSQL cluster, workers running the real Claude Code CLI against the scripted model
server (each answer 2 s late, so runs are under way when faults land). The local-process
runtime cannot be used here: ``codeyard serve`` runs Docker workers only, and killing the
manager needs it in its own process.

Workload (bench/_soak_ledger.py): ``--clients`` loops of create-with-prompt -> result ->
delete, plus a ``list`` every second. Each round waits a random gap, then injects one
fault, drawn with a seeded RNG (``--seed``, printed and recorded) among:

* ``manager_kill9``: SIGKILL ``codeyard serve``, start a new one;
* ``worker_kill``: SIGKILL a random running worker container (``docker kill``);
* ``redis_restart``: SIGKILL Redis, 1 s down, start it again on the same port and AOF;
* ``postgres_restart``: fast shutdown of the cluster, 1 s down, start it again.

Recovery time: from the fault to the first fresh ``list`` answered ok (manager, Redis,
Postgres), or until the killed worker's record is ``failed``/``stopped`` (or deleted by
its client): the manager noticed the death (worker). At the end,
after a drain: every command answered exactly once, every run with exactly one result,
zero containers and processes of the soak's owner (after deleting what is left and
stopping the manager); ``service_unavailable`` replies are a figure, not a failure.
Figures: faults per kind, recovery p50/max per kind, the manager's RSS over time (each
process's ``VmRSS`` every 2 s), worker containers that exited on their own (not 0, 137,
143) with their last log lines. Exits 1 when an invariant fails. No baseline applies: a
robustness soak. ``--minutes`` (default 5) or ``--rounds``; ``--smoke``: 4 rounds, one
fault of each kind in a seeded order, short gaps.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import secrets
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._common import RESULTS_DIR, header, percentile, setup_path, write_result  # noqa: E402

setup_path()

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402
import docker  # noqa: E402

from bench._soak_ledger import Ledger, pinger, probe, retrying, task_loop, verify  # noqa: E402
from codeyard.adapters.redis.event_bus import RedisEventBus  # noqa: E402
from codeyard.client import CodeyardClient  # noqa: E402
from codeyard.domain.commands import GetStatus  # noqa: E402
from codeyard.domain.container import LABEL_OWNER, LABEL_WORKER  # noqa: E402
from codeyard.domain.errors import WorkerNotFound  # noqa: E402
from codeyard.domain.worker import WorkerRecord  # noqa: E402
from codeyard.testing.model_server import Delay, ModelServer, Scenario, Text  # noqa: E402
from tests import services  # noqa: E402
from tests.e2e.serve_support import owned_containers, remove_owned, serve_env  # noqa: E402
from tests.faults import soak_services as soak  # noqa: E402

NAME = "soak_faults"
KINDS = ("manager_kill9", "worker_kill", "redis_restart", "postgres_restart")
DOWN_S = 1.0
ANSWER = "Soaked."


async def _cleanup(stop: Callable[[], object]) -> None:
    """Blocking clean-up off the event loop, shielded: a cancellation under way would
    otherwise skip it (the await raises at once) and leave Redis or Postgres running."""
    with anyio.CancelScope(shield=True):
        await anyio.to_thread.run_sync(stop)


class Soak:
    def __init__(self, args: argparse.Namespace, rng: random.Random) -> None:
        self.args, self.rng = args, rng
        self.owner = "soak-faults-" + uuid.uuid4().hex[:6]
        self.faults: list[dict[str, Any]] = []
        self.rss: list[tuple[float, int, float]] = []  # (s since start, pid, MB)
        self.errors: Counter[str] = Counter()
        self.began = time.monotonic()

    async def run(self, engine: docker.DockerClient, logs: Path) -> dict[str, Any]:
        binary = services.find_redis_server()
        if binary is None:
            raise SystemExit("redis-server is not installed: run scripts/dev setup")
        await soak.ensure_claude_image(engine)
        self.redis = await anyio.to_thread.run_sync(soak.DurableWorkerRedis.start, binary)
        try:
            self.pg = await anyio.to_thread.run_sync(soak.private_postgres)
        except BaseException:
            await _cleanup(self.redis.stop)
            raise
        try:
            scenario = Scenario(turns=[[Delay(2.0), Text(ANSWER)]], exhausted=[Text(ANSWER)])
            async with ModelServer(scenario, host="0.0.0.0") as model:
                env = serve_env(
                    owner=self.owner,
                    redis_url=self.redis.url,
                    postgres_dsn=self.pg.dsn("codeyard"),
                    server=model,
                    # As test_manager_kill9: a restart takes over pending creates after 2 s.
                    CODEYARD_MANAGER__TAKEOVER_S="2",
                    CODEYARD_MAX_WORKERS=str(2 * self.args.clients + 4),
                )
                self.manager = soak.ManagerProcess(env, logs)
                try:
                    return await self._serve(engine)
                finally:
                    await self.manager.stop()
        finally:
            await _cleanup(self.redis.stop)
            await _cleanup(self.pg.stop)
            await anyio.to_thread.run_sync(remove_owned, engine, self.owner)

    async def _serve(self, engine: docker.DockerClient) -> dict[str, Any]:
        first_start_s = await self.manager.start()
        bus = RedisEventBus.from_url(self.redis.url)
        ledger = Ledger(bus)
        stop = anyio.Event()
        witness = soak.ExitWitness(engine, self.owner)
        self.began = ledger.began = time.monotonic()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._sample_rss, stop)
                tg.start_soon(pinger, ledger, stop)
                for _ in range(self.args.clients):
                    tg.start_soon(task_loop, ledger, stop, self.errors, self.args.result_timeout)
                await self._inject_faults(ledger, engine)
                stop.set()  # clients finish the task in hand
            soak_s = time.monotonic() - self.began
            checks = await verify(ledger, drain_s=120)
            leftovers = await self._delete_leftovers(bus)
            with anyio.move_on_after(60):
                while await anyio.to_thread.run_sync(owned_containers, engine, self.owner):  # noqa: ASYNC110
                    await anyio.sleep(0.5)  # the engine is another process: poll
        finally:
            await bus.aclose()
            await _cleanup(witness.close)  # joins the witness thread
        await self.manager.stop()
        await anyio.sleep(1)
        checks["orphan_containers"] = await anyio.to_thread.run_sync(
            owned_containers, engine, self.owner
        )
        # Scans every process's /proc entries: off the event loop.
        checks["orphan_processes"] = await anyio.to_thread.run_sync(
            soak.owner_processes, self.owner
        )
        checks["leftover_workers_deleted"] = leftovers
        checks["client_errors"] = dict(self.errors)
        checks["workers_exited_on_their_own"] = witness.exits
        checks["tasks"] = ledger.tasks
        return {"first_start_s": round(first_start_s, 1), "soak_s": round(soak_s, 1), **checks}

    def _plan(self) -> Iterator[str]:
        if self.args.smoke:
            yield from self.rng.sample(KINDS, len(KINDS))
            return
        rounds = itertools.count() if not self.args.rounds else range(self.args.rounds)
        for _ in rounds:
            yield self.rng.choice(KINDS)

    async def _inject_faults(self, ledger: Ledger, engine: docker.DockerClient) -> None:
        until = self.began + self.args.minutes * 60
        for kind in self._plan():
            await anyio.sleep(self.rng.uniform(*self.args.gap))
            if not self.args.rounds and time.monotonic() >= until:
                return
            began = time.monotonic()
            fault: dict[str, Any] = {"kind": kind, "at_s": round(began - self.began, 1)}
            if kind == "manager_kill9":
                fault["restart_ready_s"] = round(await self.manager.kill9_restart(), 2)
                self._sample()
            elif kind == "redis_restart":
                await anyio.to_thread.run_sync(self.redis.crash_restart, DOWN_S)
            elif kind == "postgres_restart":
                await anyio.to_thread.run_sync(lambda: self.pg.restart(down_s=DOWN_S))
            if kind == "worker_kill":
                fault.update(await self._kill_worker(ledger, engine, began))
            else:
                recovered = await probe(ledger, began)
                fault["recovery_s"] = None if recovered is None else round(recovered, 2)
            print(f"[{fault['at_s']:7.1f} s] {kind}: {fault}", flush=True)
            self.faults.append(fault)

    async def _kill_worker(
        self, ledger: Ledger, engine: docker.DockerClient, began: float
    ) -> dict[str, Any]:
        def running() -> list[Any]:
            flt: dict[str, str | list[str] | bool] = {
                "label": f"{LABEL_OWNER}={self.owner}",
                "status": "running",
            }
            return sorted(engine.containers.list(filters=flt), key=lambda c: c.id)

        with anyio.move_on_after(30):
            # Every client is between tasks: wait for a worker (the engine's, so poll).
            while not (found := await anyio.to_thread.run_sync(running)):  # noqa: ASYNC110
                await anyio.sleep(0.2)
        if not found:
            return {"skipped": "no running worker", "recovery_s": None}
        victim = self.rng.choice(found)
        worker_id = victim.labels.get(LABEL_WORKER, "")
        began = time.monotonic()
        await anyio.to_thread.run_sync(victim.kill)  # SIGKILL: exit 137
        # The round's ``at_s`` is when it began to wait for a running worker.
        killed_at_s = round(began - self.began, 1)
        with anyio.move_on_after(120):
            while True:
                rid = await ledger.send(GetStatus(request_id=uuid.uuid4().hex, worker_id=worker_id))
                reply = await ledger.reply(rid, deadline_s=5)
                status = "unknown"  # no reply yet (a fault), or the worker still active
                if reply is not None and reply.ok:
                    record = WorkerRecord.model_validate(reply.result)
                    status = record.status.value if record.status.is_terminal else status
                elif reply is not None and (reply.error or {}).get("code") == "worker_not_found":
                    status = "deleted"  # its client deleted it first: the manager served
                if status != "unknown":
                    recovered = round(time.monotonic() - began, 2)
                    return {
                        "worker_id": worker_id,
                        "killed_at_s": killed_at_s,
                        "recovery_s": recovered,
                        "after": status,
                    }
                await anyio.sleep(0.1)
        return {"worker_id": worker_id, "killed_at_s": killed_at_s, "recovery_s": None}

    async def _sample_rss(self, stop: anyio.Event) -> None:
        while not stop.is_set():
            self._sample()
            await anyio.sleep(2)

    def _sample(self) -> None:
        if self.manager.serve is not None:
            pid = self.manager.pid
            if (mb := soak.rss_mb(pid)) is not None:
                self.rss.append((round(time.monotonic() - self.began, 1), pid, round(mb, 1)))

    async def _delete_leftovers(self, bus: RedisEventBus) -> list[str]:
        """Workers still active (a create answered after its client gave up): deleted."""
        client = CodeyardClient(bus)
        active = await retrying(client.list)
        for record in active:

            async def delete(worker_id: str = record.worker_id) -> None:
                with contextlib.suppress(WorkerNotFound):  # gone already: nothing to do
                    await client.delete(worker_id, timeout_s=60)

            await retrying(delete)
        return [r.worker_id for r in active]


def summarise(soak: Soak, checks: dict[str, Any]) -> dict[str, Any]:
    per_kind: dict[str, Any] = {}
    for kind in KINDS:
        done = [f for f in soak.faults if f["kind"] == kind]
        times = [f["recovery_s"] for f in done if f.get("recovery_s") is not None]
        per_kind[kind] = {
            "injected": len([f for f in done if "skipped" not in f]),
            "skipped": len([f for f in done if "skipped" in f]),
            "not_recovered": len([f for f in done if f.get("recovery_s") is None]),
            "recovery_p50_s": round(percentile(times, 50), 2) if times else None,
            "recovery_max_s": round(max(times), 2) if times else None,
        }
    mbs = [mb for _, _, mb in soak.rss]
    rss = {
        "samples": [list(s) for s in soak.rss],
        "first_mb": mbs[0] if mbs else None,
        "max_mb": max(mbs) if mbs else None,
        "last_mb": mbs[-1] if mbs else None,
        "processes": len({pid for _, pid, _ in soak.rss}),
    }
    failed = {
        "unanswered": bool(checks["unanswered"]),
        "answered_twice_or_more": bool(checks["answered_twice_or_more"]),
        "runs_without_one_result": bool(checks["runs_without_one_result"]),
        "orphan_containers": bool(checks["orphan_containers"]),
        "orphan_processes": bool(checks["orphan_processes"]),
        "fault_not_recovered": any(k["not_recovered"] - k["skipped"] for k in per_kind.values()),
    }
    return {"faults": soak.faults, "per_kind": per_kind, "rss": rss, "invariants_failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=0, help="faults to inject (not minutes)")
    parser.add_argument("--clients", type=int, default=3, help="concurrent task loops")
    parser.add_argument("--gap", type=float, nargs=2, default=(8.0, 20.0), help="min max s")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--result-timeout", type=float, default=120.0, help="per run, s")
    parser.add_argument("--smoke", action="store_true", help="4 rounds, 1 fault per kind")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--logs", type=Path, default=None, help="keep the serve logs here")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.clients, args.gap = len(KINDS), 2, (3.0, 5.0)
        args.result_timeout = 45.0
    seed = secrets.randbits(32) if args.seed is None else args.seed
    print(f"{NAME}: seed {seed}", flush=True)
    soak = Soak(args, random.Random(seed))
    with tempfile.TemporaryDirectory(prefix="codeyard-soak-faults-") as tmp:
        logs = args.logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        engine = services.docker_client()
        try:
            checks = anyio.run(soak.run, engine, logs)
        finally:
            engine.close()
    summary = summarise(soak, checks)
    result = header(NAME, smoke=args.smoke, seed=seed, clients=args.clients, **checks, **summary)
    kinds = ", ".join(
        f"{k} {v['injected']} (p50/max {v['recovery_p50_s']}/{v['recovery_max_s']} s)"
        for k, v in summary["per_kind"].items()
    )
    broken = sorted(k for k, v in summary["invariants_failed"].items() if v)
    line = (
        f"- {result['measured_at']} {NAME}: seed {seed}, {checks['soak_s']} s, "
        f"{checks['commands']} commands, "
        f"{checks['runs']} runs; faults: {kinds}; {checks['service_unavailable']} "
        f"service_unavailable; manager RSS {summary['rss']['first_mb']}->"
        f"{summary['rss']['last_mb']} MB (max {summary['rss']['max_mb']}); "
        f"invariants failed: {', '.join(broken) or 'none'}"
    )
    write_result(args.out_dir, NAME, result, line)
    if broken:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
