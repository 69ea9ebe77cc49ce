"""The WorkerCredentials contract (codeyard.ports.worker_credentials): in memory and as
Redis ACL users on a real redis-server. What a login can really do against Redis (NOPERM
outside its keys) is tests/integration/test_worker_acl.py; a real redis-server restart
under a running worker is tests/faults/test_worker_login_restore.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import anyio
import pytest
import redis.asyncio as aioredis
import redis.exceptions as rexc

from codeyard.adapters.memory.worker_credentials import InMemoryWorkerCredentials
from codeyard.adapters.redis.worker_acl import RedisAclWorkerCredentials
from codeyard.domain.errors import NotFound
from codeyard.domain.worker_access import WorkerLogin
from codeyard.ports.worker_credentials import WorkerCredentials

pytestmark = pytest.mark.anyio

Factory = Callable[[str], WorkerCredentials]


@dataclass
class Service:
    """The store behind the credentials: ``make`` an owner's instance, ``lose`` every
    login of this test's owners as a restart would (the instances remember theirs), ask
    whether a password ``authenticates``."""

    make: Factory
    lose: Callable[[], Awaitable[None]]
    authenticates: Callable[[WorkerLogin], Awaitable[bool]]


@pytest.fixture(params=["memory", "redis"])
async def service(request: pytest.FixtureRequest) -> AsyncIterator[Service]:
    """Owners are unique per test (ACL users are server-wide, so a test's users never meet
    another test's)."""
    if request.param == "memory":
        logins: dict[tuple[str, str], tuple[str, set[str]]] = {}
        store = InMemoryWorkerCredentials("store", logins=logins)

        async def lose_memory() -> None:
            store.lose_all()

        async def authenticates_memory(login: WorkerLogin) -> bool:
            return store.authenticates(login.username, login.password.get_secret_value())

        yield Service(
            lambda owner: InMemoryWorkerCredentials(owner, logins=logins),
            lose_memory,
            authenticates_memory,
        )
        return
    url: str = request.getfixturevalue("redis_url")
    client = aioredis.Redis.from_url(url, decode_responses=True)
    made: list[RedisAclWorkerCredentials] = []

    def factory(owner: str) -> WorkerCredentials:
        made.append(RedisAclWorkerCredentials(client, owner=owner))
        return made[-1]

    async def lose_redis() -> None:
        # What a restart does to this test's users; other tests' users stay.
        for creds in made:
            for slot in await creds.slots():
                await client.acl_deluser(creds.username(slot))

    async def authenticates_redis(login: WorkerLogin) -> bool:
        secret = login.password.get_secret_value()
        worker = aioredis.Redis.from_url(url, username=login.username, password=secret)
        try:
            return bool(await worker.ping())
        except rexc.AuthenticationError:
            return False
        finally:
            await worker.aclose()

    try:
        yield Service(factory, lose_redis, authenticates_redis)
    finally:
        for creds in made:
            for slot in await creds.slots():
                await creds.revoke(slot)
        await client.aclose()


@pytest.fixture
def make(service: Service) -> Factory:
    return service.make


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


async def test_restore_makes_lost_logins_again_with_the_same_password_and_keys(
    service: Service,
) -> None:
    creds = service.make(owner())
    bound, idle = await creds.issue("w1"), await creds.issue("pool-2")
    await creds.bind("w1", "w1")
    await creds.issue("gone")
    await creds.revoke("gone")
    assert await creds.restore() == ()  # nothing lost: nothing done
    keys_before = await creds.keys("w1")
    await service.lose()
    assert await creds.slots() == ()
    assert not await service.authenticates(bound)
    assert await creds.restore() == ("pool-2", "w1")
    assert await creds.slots() == ("pool-2", "w1")  # the revoked slot stays gone
    assert await service.authenticates(bound)
    assert await service.authenticates(idle)
    assert await creds.keys("w1") == keys_before
    assert await creds.keys("pool-2") == ("worker:standby:pool-2",)
    assert await creds.restore() == ()  # idempotent
    # Only the password's digest is kept, never the password.
    for login in (bound, idle):
        assert login.password.get_secret_value() not in repr(vars(creds))


async def test_restore_brings_back_the_latest_password_of_a_slot_only(service: Service) -> None:
    creds = service.make(owner())
    first = await creds.issue("w1")
    second = await creds.issue("w1")
    await service.lose()
    assert await creds.restore() == ("w1",)
    assert await service.authenticates(second)
    assert not await service.authenticates(first)


async def test_restore_sees_only_what_this_instance_issued(service: Service) -> None:
    name = owner()
    mine, theirs = service.make(name), service.make(owner())
    await mine.issue("a")
    await theirs.issue("a")
    await service.lose()
    assert await mine.restore() == ("a",)
    assert await theirs.slots() == ()  # another owner's login is its manager's business
    # A restarted manager (a new instance of the same owner) knows no password.
    await service.lose()
    assert await service.make(name).restore() == ()
    assert await mine.restore() == ("a",)


async def test_bind_of_a_lost_live_slot_makes_its_login_again(service: Service) -> None:
    creds = service.make(owner())
    login = await creds.issue("pool-1")
    await service.lose()
    await creds.bind("pool-1", "w7")
    assert await service.authenticates(login)
    assert await creds.keys("pool-1") == (
        "worker:standby:pool-1",
        "worker:w7:input",
        "worker:w7:output",
    )


async def test_a_revoke_racing_a_restore_never_leaves_a_login(service: Service) -> None:
    creds = service.make(owner())
    for attempt in range(20):
        await creds.issue(f"pool-{attempt}")
    await service.lose()
    async with anyio.create_task_group() as tg:
        tg.start_soon(creds.restore)
        for attempt in range(20):
            tg.start_soon(creds.revoke, f"pool-{attempt}")
    assert await creds.slots() == ()
    assert await creds.restore() == ()
