"""Image-cache benchmark: the hit path of ``WorkerImages.ensure`` against a bare inspect,
and the cold build of a worker image.

Issue #8: "a cached worker image costs the create path no more than looking it up". Run
from the repo root::

    uv run python bench/image_cache.py            # 200 hits, 3 cold builds (minutes each)
    uv run python bench/image_cache.py --smoke    # 20 hits, no cold build (the tests run this)

Set-up (all real): Docker, ``WorkerImages`` assembled by ``docker_worker_images`` exactly as
``codeyard serve`` assembles it, with its ledger (``RedisImageUsage``: the per-hash lock and
last-use time) on an ephemeral ``redis-server``. The spec is ``WorkerSpec(agent="claude")``;
its image is built once (untimed) if this engine lacks it.

* **hit**: wall ms of ``ensure`` on the cached image (ledger lock, ``inspect``, label check,
  ledger touch), interleaved per repetition with the baselines, wall ms of a bare
  ``docker image inspect TAG`` (the CLI: a process start plus the API call) and of the
  API call alone (docker-py ``inspect_image``, in a thread as ``ensure`` makes it).
* **cold build** (not in ``--smoke``): wall seconds of ``ensure`` on a recipe no engine has
  seen. The recipe is the spec's, on a throw-away base tagged from the real one with a
  unique ``LABEL`` (a new image id), so Docker's layer cache cannot serve any step and the
  whole Dockerfile runs (apt, CA certificates, wrapper, npm install of the CLI), as for a
  new spec on a fresh host whose base image is already bootstrapped. The built image and
  the throw-away base are removed afterwards.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _ROOT / "bench"]
sys.path.insert(0, str(_ROOT))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from typing import Any  # noqa: E402

import anyio  # noqa: E402
import anyio.to_thread  # noqa: E402
import docker  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
import structlog  # noqa: E402

from bench._common import RESULTS_DIR, header, met, stats, write_result  # noqa: E402
from codeyard.adapters.redis.image_usage import RedisImageUsage  # noqa: E402
from codeyard.app.manager.images import WorkerImages, docker_worker_images  # noqa: E402
from codeyard.app.settings import Settings  # noqa: E402
from codeyard.domain.container import ImageRecipe  # noqa: E402
from codeyard.domain.worker import WorkerSpec  # noqa: E402
from tests.services import find_redis_server, start_redis  # noqa: E402

NAME = "image_cache"
SPEC = WorkerSpec(agent="claude")
#: The hit path may cost at most this many times a bare `docker image inspect`.
TARGET_HIT_OVER_INSPECT_P50 = 1.0
BENCH_BASE_REPOSITORY = "codeyard-bench-base"


def cli_inspect_ms(tag: str) -> float:
    began = time.perf_counter()
    subprocess.run(["docker", "image", "inspect", tag], check=True, capture_output=True)
    return (time.perf_counter() - began) * 1000


async def api_inspect_ms(client: docker.DockerClient, tag: str) -> float:
    began = time.perf_counter()
    await anyio.to_thread.run_sync(client.api.inspect_image, tag)
    return (time.perf_counter() - began) * 1000


async def hit_ms(images: WorkerImages) -> float:
    began = time.perf_counter()
    await images.ensure(SPEC)
    return (time.perf_counter() - began) * 1000


def throwaway_base(client: docker.DockerClient, base_id: str) -> tuple[str, str]:
    """``(tag, id)`` of a new image on ``base_id`` that differs only by a unique label."""
    tag = f"{BENCH_BASE_REPOSITORY}:{uuid.uuid4().hex[:12]}"
    dockerfile = f"FROM {base_id}\nLABEL dev.codeyard.bench={tag.rpartition(':')[2]}\n"
    image, _ = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return tag, str(image.id)


def remove_images(client: docker.DockerClient, *tags: str) -> None:
    for tag in tags:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(tag, force=True)


async def cold_build_s(images: WorkerImages, client: docker.DockerClient) -> float:
    """Seconds of ``ensure`` on the spec's recipe moved to a throw-away base (see module doc)."""
    recipe = images.recipe(SPEC)
    base_tag, base_id = await anyio.to_thread.run_sync(
        throwaway_base, client, recipe.base_image_id or recipe.base_image
    )
    fresh = ImageRecipe.model_validate(
        {**recipe.model_dump(), "base_image": base_tag, "base_image_id": base_id}
    )
    try:
        began = time.perf_counter()
        await images.cache.ensure(fresh)
        return time.perf_counter() - began
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(remove_images, client, fresh.tag, base_tag)


async def run_bench(hits: int, cold_builds: int) -> dict[str, Any]:
    redis_binary = find_redis_server()
    if redis_binary is None:
        raise SystemExit("redis-server is not installed (scripts/dev setup installs it)")
    redis_server = await anyio.to_thread.run_sync(start_redis, redis_binary)
    client = docker.from_env()
    redis = aioredis.from_url(redis_server.url)
    try:
        usage = RedisImageUsage(redis, key=f"codeyard:images:bench-{uuid.uuid4().hex[:8]}")
        images = await docker_worker_images(Settings(), client, usage=usage)
        tag = (await images.ensure(SPEC)).tag  # builds when missing: not timed
        hit: list[float] = []
        cli: list[float] = []
        api: list[float] = []
        for _ in range(hits):
            hit.append(await hit_ms(images))
            cli.append(await anyio.to_thread.run_sync(cli_inspect_ms, tag))
            api.append(await api_inspect_ms(client, tag))
        cold: list[float] = []
        for rep in range(cold_builds):
            cold.append(await cold_build_s(images, client))
            print(f"cold build {rep + 1}/{cold_builds}: {cold[-1]:.1f} s", file=sys.stderr)
    finally:
        with anyio.CancelScope(shield=True):
            await redis.aclose()
            client.close()
            await anyio.to_thread.run_sync(redis_server.stop)
    return report(tag, hit, cli, api, cold)


def report(
    tag: str, hit: list[float], cli: list[float], api: list[float], cold: list[float]
) -> dict[str, Any]:
    out = header(
        NAME,
        repetitions=len(hit),
        cold_builds=len(cold),
        image=tag,
        spec=SPEC.model_dump(mode="json", exclude_defaults=True),
        ledger="RedisImageUsage on an ephemeral redis-server",
        clock="perf_counter wall time in this process",
        hit=stats(hit),
        docker_image_inspect_cli=stats(cli),
        docker_api_inspect=stats(api),
    )
    if cold:
        out["cold_build"] = stats(cold, "s")
    ratio = out["hit"]["p50_ms"] / max(out["docker_image_inspect_cli"]["p50_ms"], 1e-9)
    out["ratio_hit_over_cli_inspect_p50"] = round(ratio, 2)
    out["ratio_hit_over_api_inspect_p50"] = round(
        out["hit"]["p50_ms"] / max(out["docker_api_inspect"]["p50_ms"], 1e-9), 2
    )
    out["target"] = {
        "hit_over_cli_inspect_p50_max": TARGET_HIT_OVER_INSPECT_P50,
        "met": ratio <= TARGET_HIT_OVER_INSPECT_P50,
    }
    return out


def summary_line(result: dict[str, Any]) -> str:
    hit, cli, api = (result[k] for k in ("hit", "docker_image_inspect_cli", "docker_api_inspect"))
    cold = result.get("cold_build")
    cold_text = (
        f"cold build p50/p95 {cold['p50_s']:.0f}/{cold['p95_s']:.0f} s"
        if cold
        else "no cold build (smoke)"
    )
    return (
        f"- {result['measured_at']} image_cache n={result['repetitions']}: hit p50/p95 "
        f"{hit['p50_ms']:.1f}/{hit['p95_ms']:.1f} ms vs `docker image inspect` "
        f"{cli['p50_ms']:.1f}/{cli['p95_ms']:.1f} ms (x{result['ratio_hit_over_cli_inspect_p50']}"
        f"), API inspect {api['p50_ms']:.1f} ms; {cold_text}; target hit <= inspect: "
        f"{met(result['target']['met'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or NAME).split("\n")[0])
    parser.add_argument("-n", "--repetitions", type=int, default=200)
    parser.add_argument("--cold-builds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="20 hits, no cold build")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    hits, cold = (20, 0) if args.smoke else (args.repetitions, args.cold_builds)
    result = anyio.run(run_bench, hits, cold)
    write_result(args.out_dir, NAME, result, summary_line(result))


if __name__ == "__main__":
    main()
