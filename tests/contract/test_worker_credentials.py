"""The WorkerCredentials contract (codeyard.ports.worker_credentials): in memory and as
Redis ACL users on a real redis-server. What a login can really do against Redis (NOPERM
outside its keys) is tests/integration/test_worker_acl.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import anyio
import pytest
import redis.asyncio as aioredis

from codeyard.adapters.memory.worker_credentials import InMemoryWorkerCredentials
from codeyard.adapters.redis.worker_acl import RedisAclWorkerCredentials
from codeyard.domain.errors import NotFound
from codeyard.ports.worker_credentials import WorkerCredentials

pytestmark = pytest.mark.anyio

Factory = Callable[[str], WorkerCredentials]


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Credentials per owner, all on one store; owners are unique per test (ACL users are
    server-wide, so a test's users never meet another test's)."""
    if request.param == "memory":
        logins: dict[tuple[str, str], tuple[str, set[str]]] = {}
        yield lambda owner: InMemoryWorkerCredentials(owner, logins=logins)
        return
    url: str = request.getfixturevalue("redis_url")
    client = aioredis.Redis.from_url(url, decode_responses=True)
    made: list[RedisAclWorkerCredentials] = []

    def factory(owner: str) -> WorkerCredentials:
        made.append(RedisAclWorkerCredentials(client, owner=owner))
        return made[-1]

    try:
        yield factory
    finally:
        for creds in made:
            for slot in await creds.slots():
                await creds.revoke(slot)
        await client.aclose()


def owner() -> str:
    return "owner-" + uuid.uuid4().hex[:8]


async def test_a_new_login_reaches_only_its_standby_stream(make: Factory) -> None:
    creds = make(owner())
    await creds.check()
    login = await creds.issue("pool-1")
    assert login.username.startswith("codeyard-worker:")
    assert login.username.endswith(":pool-1")
    assert len(login.password.get_secret_value()) >= 32
    assert login.password.get_secret_value() not in repr(login)
    assert await creds.keys("pool-1") == ("worker:standby:pool-1",)
    assert await creds.slots() == ("pool-1",)


async def test_bind_adds_exactly_the_workers_two_streams_and_is_idempotent(make: Factory) -> None:
    creds = make(owner())
    await creds.issue("pool-1")
    await creds.bind("pool-1", "w1")
    await creds.bind("pool-1", "w1")
    assert await creds.keys("pool-1") == (
        "worker:standby:pool-1",
        "worker:w1:input",
        "worker:w1:output",
    )


async def test_issue_again_starts_over_with_a_new_password(make: Factory) -> None:
    creds = make(owner())
    first = await creds.issue("w1")
    await creds.bind("w1", "w1")
    second = await creds.issue("w1")
    assert first.username == second.username
    assert first.password.get_secret_value() != second.password.get_secret_value()
    assert await creds.keys("w1") == ("worker:standby:w1",)


async def test_unknown_slots_are_not_found_and_revoke_is_idempotent(make: Factory) -> None:
    creds = make(owner())
    with pytest.raises(NotFound):
        await creds.bind("nope", "w1")
    with pytest.raises(NotFound):
        await creds.keys("nope")
    assert await creds.slots() == ()  # bind created nothing
    await creds.issue("s1")
    await creds.revoke("s1")
    await creds.revoke("s1")
    assert await creds.slots() == ()
    with pytest.raises(NotFound):
        await creds.bind("s1", "w1")


async def test_owners_see_only_their_own_slots(make: Factory) -> None:
    mine, theirs = make(owner()), make(owner())
    await mine.issue("b")
    await mine.issue("a")
    await theirs.issue("a")
    assert await mine.slots() == ("a", "b")
    assert await theirs.slots() == ("a",)
    await theirs.revoke("a")
    assert await mine.slots() == ("a", "b")
    assert await mine.keys("a") == ("worker:standby:a",)


async def test_a_revoke_racing_a_bind_never_leaves_a_login(make: Factory) -> None:
    creds = make(owner())
    for attempt in range(20):
        slot = f"pool-{attempt}"
        await creds.issue(slot)
        bound: list[bool] = []

        async def bind(slot: str = slot, bound: list[bool] = bound) -> None:
            try:
                await creds.bind(slot, "w1")
            except NotFound:  # the revoke came first: fine, nothing made
                bound.append(False)
            else:
                bound.append(True)

        async with anyio.create_task_group() as tg:
            tg.start_soon(bind)
            tg.start_soon(creds.revoke, slot)
        assert len(bound) == 1
    # Whichever ran first, bind and revoke of one slot are ordered: no login comes back.
    assert await creds.slots() == ()
