"""Redis restarted under a serving manager (issue #9): a manager on the local-process
runtime keeps serving ``worker:commands`` while its Redis is killed and started again on
the same port; every command sent before, during (the sender retries until Redis takes
it) and after the restart gets its reply. The Redis is private to the test (restarting the
shared one would break tests running in parallel) and durable (AOF, fsync always): what
it acknowledged survives, so any lost command is the manager's fault."""

from __future__ import annotations

import functools
import time
import uuid
from pathlib import Path

import anyio
import pytest

from codeyard.adapters.redis.event_bus import RedisEventBus
from codeyard.domain.commands import AnyCommand, GetStatus, ListWorkers, command_fields
from codeyard.domain.errors import CodeyardError
from codeyard.domain.streams import COMMANDS_STREAM, response_stream
from codeyard.testing.model_server import ModelServer, Scenario
from tests import services
from tests.faults.command_fuzz import replies, wait_for
from tests.integration.manager_local_support import local_config, local_manager

pytestmark = [pytest.mark.anyio, pytest.mark.faults, pytest.mark.redis, pytest.mark.slow]

COMMANDS = 120
RESTART_AFTER = 40


async def _publish(bus: RedisEventBus, command: AnyCommand, deadline_s: float = 30) -> int:
    """Publish, retrying while Redis is down; how many attempts failed."""
    failed = 0
    with anyio.fail_after(deadline_s):
        while True:
            try:
                await bus.publish(COMMANDS_STREAM, command_fields(command))
            except CodeyardError:
                failed += 1
                await anyio.sleep(0.05)
            else:
                return failed


async def test_every_command_is_answered_across_a_redis_crash_and_restart(
    durable_redis: services.RedisServer, tmp_path: Path
) -> None:
    url = durable_redis.url
    sent: list[str] = []
    refused = 0
    halfway, restarted = anyio.Event(), anyio.Event()
    async with ModelServer(Scenario.text("ok")) as server:
        config = local_config(url, server, "faults-redis-restart")
        async with local_manager(url, config, tmp_path=tmp_path) as m:
            sender = RedisEventBus.from_url(url)

            async def send_all() -> None:
                nonlocal refused
                for i in range(COMMANDS):
                    if i == RESTART_AFTER // 2:
                        halfway.set()
                    if i == RESTART_AFTER:  # the rest after Redis is back
                        await restarted.wait()
                    rid = uuid.uuid4().hex
                    command: AnyCommand = (
                        ListWorkers(request_id=rid)
                        if i % 2
                        else GetStatus(request_id=rid, worker_id="w-nobody")
                    )
                    refused += await _publish(sender, command)  # retried while down
                    sent.append(rid)
                    await anyio.sleep(0.01)

            async def crash_redis() -> None:
                await halfway.wait()
                restart = functools.partial(durable_redis.restart, kill=True, down_s=1.0)
                await anyio.to_thread.run_sync(restart)
                restarted.set()

            began = time.monotonic()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(send_all)
                    tg.start_soon(crash_redis)

                async def all_answered() -> bool:
                    lengths = [await sender.length(response_stream(rid)) for rid in sent]
                    return all(lengths)

                await wait_for(all_answered, 60)
                elapsed = time.monotonic() - began
                answers = {rid: await replies(sender, rid) for rid in sent}
                still = await m.client.list()  # the manager still answers
            finally:
                await sender.aclose()
    assert len(sent) == COMMANDS
    assert all(len(r) == 1 for r in answers.values()), "one reply per command"
    for i, rid in enumerate(sent):
        (reply,) = answers[rid]
        assert reply.ok if i % 2 else reply.error_code == "worker_not_found", reply
    assert still == []
    print(
        f"{COMMANDS} commands answered across a Redis restart in {elapsed:.1f} s"
        f" ({refused} publish attempts refused while it was down)"
    )
