"""End to end: two ``codeyard serve`` processes on two Docker engines share one Redis and
one Postgres. Both consume ``worker:commands``, every command is answered exactly once, a
worker belongs to the manager whose engine runs it, and commands that need the engine
(``delete``, ``logs``) reach the owner by forwarding.

Replies are counted on reply streams the test names itself (``reply_to``): the client
deletes the streams it creates, which would hide a duplicate reply.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import docker
import pytest

from codeyard.adapters.docker.base_image import base_tag
from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.app.command_service import FORWARDED_FIELD
from codeyard.app.manager.images import WorkerImages
from codeyard.client import CodeyardClient
from codeyard.domain.commands import (
    AnyCommand,
    CreateResult,
    CreateWorker,
    DeleteResult,
    DeleteWorker,
    GetLogs,
    LogsResult,
    Reply,
    command_fields,
    parse_command,
)
from codeyard.domain.container import ImageRef
from codeyard.domain.streams import (
    COMMANDS_STREAM,
    DEAD_LETTER_STREAM,
    StreamMessage,
    owner_commands_stream,
)
from codeyard.domain.worker import WorkerSpec, WorkerStatus
from codeyard.testing.model_server import ModelServer, Scenario
from tests.e2e.serve_support import owned_containers, remove_owned, serve_env, serving
from tests.integration.manager_support import claude_worker_image
from tests.services.second_engine import SecondEngine, copy_image
from tests.services.worker_redis import WorkerRedis

__all__ = ["claude_worker_image"]  # the session fixture, until conftest imports it

pytestmark = [pytest.mark.anyio, pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]

CREATES = 8
PROMPTED = 4  # the first PROMPTED creates carry a headless prompt
ANSWER = "two engines, one answer"
REPLY_S = 300.0  # a cold container start on a loaded machine, with margin
RESULT_S = 300.0
SPEC = WorkerSpec(agent="claude")
GROUP = "codeyard-managers"


def _reply_stream(request_id: str) -> str:
    return f"test:replies:{request_id}"


async def _replies(bus: RedisEventBus, request_id: str) -> list[Reply]:
    """Every reply entry on the test-owned reply stream of ``request_id``."""
    entries = await bus.read(_reply_stream(request_id), after="0-0", count=1000)
    return [Reply.from_fields(entry.fields) for entry in entries]


class Tail:
    """Records a stream's entries as they arrive: the command service trims ACKed entries
    off its streams (owner streams too), so reading them afterwards could miss some."""

    def __init__(self, bus: RedisEventBus, stream: str) -> None:
        self._bus = bus
        self._stream = stream
        self._entries: dict[str, StreamMessage] = {}  # by id: run and catch_up may overlap

    async def run(self) -> None:
        while True:
            await self._read(block_s=1.0)

    async def _read(self, *, block_s: float | None) -> None:
        after = max(self._entries, key=_entry_key, default="0-0")
        for entry in await self._bus.read(self._stream, after=after, block_s=block_s):
            self._entries[entry.id] = entry

    async def commands(self) -> list[tuple[AnyCommand, str]]:
        """Every command seen so far, with its forward counter ("" when never forwarded)."""
        await self._read(block_s=None)
        entries = sorted(self._entries.values(), key=lambda e: _entry_key(e.id))
        return [(parse_command(e.fields), e.fields.get(FORWARDED_FIELD, "")) for e in entries]


def _entry_key(entry_id: str) -> tuple[int, int]:
    millis, seq = entry_id.split("-")
    return int(millis), int(seq)


@dataclass
class Cluster:
    """Two serving managers and what the test drives them with."""

    owners: tuple[str, str]
    engines: dict[str, docker.DockerClient]
    bus: RedisEventBus
    client: CodeyardClient
    suffix: str
    logs: Path
    timings: dict[str, float] = field(default_factory=dict)

    def print_logs(self) -> None:
        """Both managers' output (pytest shows it when the test fails)."""
        for path in sorted(self.logs.glob("serve-*.log")):
            print(f"--- {path.name} ---\n{path.read_text(errors='replace')}")


@asynccontextmanager
async def _serve_both(
    owners: tuple[str, str],
    redis: WorkerRedis,
    postgres_db: str,
    engine2: SecondEngine,
    logs: Path,
) -> AsyncIterator[None]:
    """The model server; manager A on engine 1, manager B on engine 2, started together."""
    common = {"CODEYARD_MANAGER__CONCURRENCY": "1"}
    async with AsyncExitStack() as stack:
        server = await stack.enter_async_context(ModelServer(Scenario.text(ANSWER), host="0.0.0.0"))
        env_a = serve_env(
            owner=owners[0], redis_url=redis.url, postgres_dsn=postgres_db, server=server, **common
        )
        env_b = serve_env(
            owner=owners[1],
            redis_url=redis.url,
            postgres_dsn=postgres_db,
            server=server,
            CODEYARD_DOCKER_HOST=engine2.base_url,
            CODEYARD_DOCKER_BRIDGE_TAG="e2",
            **common,
        )
        a = await stack.enter_async_context(serving(env_a, logs / "serve-a.log", ready=False))
        b = await stack.enter_async_context(serving(env_b, logs / "serve-b.log", ready=False))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(a.wait_ready)
                tg.start_soon(b.wait_ready)
        except BaseException:
            print(f"--- manager A ---\n{a.output()}\n--- manager B ---\n{b.output()}")
            raise
        yield


@pytest.fixture
async def engine2(
    claude_worker_image: tuple[WorkerImages, ImageRef],
    docker_client: docker.DockerClient,
    second_docker_engine: SecondEngine,
) -> SecondEngine:
    """The second engine with the worker and base images, so serve there builds nothing
    (image ids survive ``docker save``/``load``; the recipe names the base by id)."""
    _, ref = claude_worker_image
    began = time.monotonic()
    for tag in (ref.tag, base_tag("ubuntu-noble")):
        await anyio.to_thread.run_sync(copy_image, docker_client, second_docker_engine.client, tag)
    print(f"images copied to the second engine in {time.monotonic() - began:.1f}s")
    return second_docker_engine


@pytest.fixture
async def cluster(
    engine2: SecondEngine,
    worker_redis_db: WorkerRedis,
    postgres_db: str,
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> AsyncIterator[Cluster]:
    """Both managers serving; afterwards every container of either owner is removed."""
    began = time.monotonic()
    engine1 = docker_client
    # Unique per run: another test's manager on engine 1 would reap our containers as orphans.
    suffix = secrets.token_hex(3)
    owners = (f"e2e-a-{suffix}", f"e2e-b-{suffix}")
    bus = RedisEventBus.from_url(worker_redis_db.url)
    try:
        async with (
            _serve_both(owners, worker_redis_db, postgres_db, engine2, tmp_path),
            CodeyardClient.connect(worker_redis_db.url, reply_timeout_s=REPLY_S) as client,
        ):
            engines = dict(zip(owners, (engine1, engine2.client), strict=True))
            timings = {"both managers ready": time.monotonic() - began}
            cluster = Cluster(owners, engines, bus, client, suffix, tmp_path, timings)
            yield cluster
            print("timings (s):", {k: round(v, 1) for k, v in cluster.timings.items()})
    finally:
        with anyio.CancelScope(shield=True):
            await bus.aclose()
            for owner in owners:
                for engine in (engine1, engine2.client):
                    await anyio.to_thread.run_sync(remove_owned, engine, owner)


@asynccontextmanager
async def _timed(cluster: Cluster, step: str) -> AsyncIterator[None]:
    started = time.monotonic()
    yield
    cluster.timings[step] = time.monotonic() - started


async def _create_burst(cluster: Cluster) -> tuple[list[CreateWorker], dict[str, str]]:
    """CREATES concurrent creates (the first PROMPTED headless); worker id -> its owner."""
    suffix = cluster.suffix
    creates = [
        CreateWorker(
            request_id=f"create-{suffix}-{i}",
            worker_id=f"w-{suffix}-{i}",
            spec=SPEC,
            prompt=f"task {i}" if i < PROMPTED else None,
            reply_to=_reply_stream(f"create-{suffix}-{i}"),
        )
        for i in range(CREATES)
    ]
    created: dict[str, CreateResult] = {}

    async def create(command: CreateWorker) -> None:
        result = await cluster.client.call(command, timeout_s=REPLY_S)
        assert isinstance(result, dict)
        created[command.request_id] = CreateResult.parse(result)

    async with _timed(cluster, f"{CREATES} creates answered"), anyio.create_task_group() as tg:
        for command in creates:
            tg.start_soon(create, command)
    assert [created[c.request_id].worker_id for c in creates] == [c.worker_id for c in creates]
    hosts = {}
    for command in creates:
        assert command.worker_id is not None
        hosts[command.worker_id] = (await cluster.client.status(command.worker_id)).host
    return creates, hosts


async def _wait_results(cluster: Cluster, creates: list[CreateWorker]) -> None:
    """The headless prompts end in the scripted answer (the real claude CLI ran)."""
    async with _timed(cluster, f"{PROMPTED} prompted results"):
        for command in creates[:PROMPTED]:
            assert command.worker_id is not None
            result = await cluster.client.wait_result(
                command.worker_id, request_id=command.request_id, timeout_s=RESULT_S
            )
            assert result.ok, result
            assert result.text == ANSWER


async def _logs_via(cluster: Cluster, via: str, worker_id: str) -> GetLogs:
    """``logs`` of ``worker_id`` put on manager ``via``'s own stream; its reply's result."""
    rid = f"logs-{cluster.suffix}"
    command = GetLogs(request_id=rid, worker_id=worker_id, tail=200, reply_to=_reply_stream(rid))
    await cluster.bus.publish(owner_commands_stream(via), command_fields(command))
    with anyio.fail_after(REPLY_S):
        while not (replies := await _replies(cluster.bus, rid)):
            await cluster.bus.read(_reply_stream(rid), block_s=1.0)
    replies[0].raise_for_error()
    assert isinstance(replies[0].result, dict)
    assert LogsResult.parse(replies[0].result).worker_id == worker_id
    return command


async def _delete_all(cluster: Cluster, workers: list[str]) -> None:
    """Deletes through the one client, concurrently; every worker ends STOPPED."""
    deleted: dict[str, DeleteResult] = {}

    async def delete(worker_id: str) -> None:
        rid = f"delete-{worker_id}"
        command = DeleteWorker(request_id=rid, worker_id=worker_id, reply_to=_reply_stream(rid))
        result = await cluster.client.call(command, timeout_s=REPLY_S)
        assert isinstance(result, dict)
        deleted[worker_id] = DeleteResult.parse(result)

    async with _timed(cluster, f"{len(workers)} deletes answered"), anyio.create_task_group() as tg:
        for worker_id in workers:
            tg.start_soon(delete, worker_id)
    assert {w: r.status for w, r in deleted.items()} == dict.fromkeys(workers, WorkerStatus.STOPPED)
    for worker_id in workers:
        assert (await cluster.client.status(worker_id)).status is WorkerStatus.STOPPED


async def test_two_managers_on_two_engines_handle_every_command_once(cluster: Cluster) -> None:
    tails = {o: Tail(cluster.bus, owner_commands_stream(o)) for o in cluster.owners}
    try:
        async with anyio.create_task_group() as tg:
            for tail in tails.values():
                tg.start_soon(tail.run)
            await _scenario(cluster, tails)
            tg.cancel_scope.cancel()
    except BaseException:
        cluster.print_logs()
        raise


async def _scenario(cluster: Cluster, tails: dict[str, Tail]) -> None:
    owner_a, owner_b = cluster.owners
    bus, client = cluster.bus, cluster.client

    # A burst of creates: with one command at a time each, both managers take some.
    creates, hosts = await _create_burst(cluster)
    by_owner = {o: sorted(w for w, h in hosts.items() if h == o) for o in cluster.owners}
    assert all(by_owner.values()), f"one manager took every create: {hosts}"
    print("workers per manager:", {o: len(w) for o, w in by_owner.items()})
    for owner, workers in by_owner.items():
        engine = cluster.engines[owner]
        on_engine = await anyio.to_thread.run_sync(owned_containers, engine, owner)
        assert len(on_engine) == len(workers), (owner, on_engine, workers)

    await _wait_results(cluster, creates)

    # logs of a B worker sent to A's own stream: A must forward it, B answers.
    logs_command = await _logs_via(cluster, owner_a, by_owner[owner_b][0])
    # Through the shared stream, whichever manager takes it.
    assert isinstance(await client.logs(by_owner[owner_a][0]), str)

    await _delete_all(cluster, sorted(hosts))

    # Exactly one reply per command, each a success.
    request_ids = [c.request_id for c in creates]
    request_ids += [f"delete-{w}" for w in hosts] + [logs_command.request_id]
    for rid in request_ids:
        replies = await _replies(bus, rid)
        assert len(replies) == 1, (rid, replies)
        assert replies[0].ok, replies[0]
    # Forwards went to the worker's owner, once each (a delete is forwarded when the manager
    # that took it from the shared stream is not the owner: how many depends on the race).
    forwarded_deletes = 0
    for owner in cluster.owners:
        for command, counter in await tails[owner].commands():
            if command == logs_command and owner == owner_a:
                continue  # put there by the test itself, not forwarded
            assert isinstance(command, DeleteWorker | GetLogs), command
            assert hosts[command.worker_id] == owner, (owner, command)
            assert counter == "1"
            forwarded_deletes += isinstance(command, DeleteWorker)
    assert [c for c, _ in await tails[owner_b].commands()].count(logs_command) == 1
    print(f"deletes forwarded to the owner: {forwarded_deletes} of {len(hosts)}")
    # No container of either owner is left on either engine.
    for owner in cluster.owners:
        for engine in cluster.engines.values():
            assert await anyio.to_thread.run_sync(owned_containers, engine, owner) == []
    # Everything ACKed on every stream; nothing dead-lettered.
    for stream in (COMMANDS_STREAM, *map(owner_commands_stream, cluster.owners)):
        assert await bus.pending_count(stream, GROUP) == 0, stream
    assert await bus.length(DEAD_LETTER_STREAM) == 0
