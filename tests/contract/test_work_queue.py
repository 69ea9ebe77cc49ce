"""The WorkQueue contract (codeyard.ports.work_queue), one suite for every adapter.

Each adapter is one param of the ``env`` fixture. Time is abstracted by :class:`QueueEnv`:
the memory queue runs on a ``ManualClock`` that ``advance`` moves instantly, while
Postgres uses the database's clock, so ``advance`` sleeps and its leases are short. Test
bodies only use ``env.short`` (a lease or delay ``advance`` can outlive), ``LONG`` (one that
never expires during a test) and ``env.advance``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import anyio
import asyncpg
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from pydantic import JsonValue

from codeyard.adapters.memory.clock import ManualClock
from codeyard.adapters.memory.work_queue import InMemoryWorkQueue
from codeyard.adapters.postgres.migrate import migrate
from codeyard.adapters.postgres.work_queue import PostgresWorkQueue
from codeyard.domain.base import JSON_MAX_DEPTH
from codeyard.domain.errors import CodeyardError, InvalidRequest, JobNotFound, LeaseLost
from codeyard.domain.task import Job, JobStatus, RetryPolicy
from codeyard.ports.work_queue import LEASE_EXPIRED_ON_FINAL_ATTEMPT, WorkQueue

pytestmark = pytest.mark.anyio

LONG = timedelta(seconds=120)
Q = "builds"


@dataclass(frozen=True)
class QueueEnv:
    queue: WorkQueue
    #: A lease/backoff in seconds that ``advance(short_s)`` outlives.
    short_s: float
    #: Let (at least) ``seconds`` pass on the queue's clock.
    advance: Callable[[float], Awaitable[None]]
    #: Roughly the queue's current time (exact for memory).
    now: Callable[[], datetime]

    @property
    def short(self) -> timedelta:
        return timedelta(seconds=self.short_s)


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def env(request: pytest.FixtureRequest) -> AsyncIterator[QueueEnv]:
    if request.param == "memory":
        clock = ManualClock()

        async def advance_clock(seconds: float) -> None:
            clock.advance(seconds)

        yield QueueEnv(InMemoryWorkQueue(clock), 5.0, advance_clock, clock.now)
        return

    dsn: str = request.getfixturevalue("postgres_db")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=8)
    try:
        await migrate(pool)
        async with PostgresWorkQueue(pool, poll_interval_s=0.5) as queue:

            async def sleep(seconds: float) -> None:
                await anyio.sleep(seconds + 0.05)

            yield QueueEnv(queue, 0.3, sleep, lambda: datetime.now(UTC))
    finally:
        with anyio.fail_after(10):
            await pool.close()


async def claim_all(queue: WorkQueue, owner: str) -> list[str]:
    ids = []
    while (job := await queue.claim(Q, owner, lease=LONG)) is not None:
        ids.append(job.id)
    return ids


# --- enqueue ---------------------------------------------------------------------------------


async def test_enqueue_stores_a_queued_job(env: QueueEnv) -> None:
    job = await env.queue.enqueue(Q, {"task": "build", "n": [1, 2.5, None, True]}, max_attempts=4)

    assert job.queue == Q
    assert job.payload == {"task": "build", "n": [1, 2.5, None, True]}
    assert (job.status, job.attempts, job.max_attempts) == (JobStatus.QUEUED, 0, 4)
    assert job.lease_owner is None
    assert job.lease_expires_at is None
    assert job.available_at == job.created_at == job.updated_at
    assert job.last_error is None
    assert job.result is None
    assert await env.queue.get(job.id) == job
    other = await env.queue.enqueue(Q, {"task": "build", "n": [1, 2.5, None, True]})
    assert other.id != job.id  # no id given: a new job every time
    assert await env.queue.depth(Q) == 2


async def test_enqueue_with_an_id_is_idempotent(env: QueueEnv) -> None:
    first = await env.queue.enqueue(Q, {"v": 1}, job_id="job-1")
    again = await env.queue.enqueue(Q, {"v": 2}, job_id="job-1", max_attempts=9)

    assert first.id == "job-1"
    assert again == first
    assert await env.queue.get("job-1") == first
    assert await env.queue.depth(Q) == 1


INVALID_ENQUEUES: list[tuple[str, dict[str, float], dict[str, object]]] = [
    ("bad queue!", {}, {}),
    (Q, {}, {"job_id": "no/slashes"}),
    (Q, {}, {"max_attempts": 0}),
    (Q, {}, {"available_at": datetime(2026, 1, 1)}),  # naive on purpose
    (Q, {"x": math.nan}, {}),
]


async def test_enqueue_rejects_invalid_input(env: QueueEnv) -> None:
    # One test for all cases: each Postgres test costs a fresh database.
    for queue, payload, kwargs in INVALID_ENQUEUES:
        with pytest.raises(CodeyardError) as info:
            await env.queue.enqueue(queue, payload, **kwargs)  # type: ignore[arg-type]
        assert info.value.code in {"invalid_name", "invalid_request"}, (queue, payload, kwargs)

    assert await env.queue.depth(Q) == 0


# --- claim -----------------------------------------------------------------------------------


async def test_claim_takes_the_oldest_available_job(env: QueueEnv) -> None:
    now = env.now()
    later = await env.queue.enqueue(Q, {"n": "later"}, available_at=now + timedelta(hours=1))
    a = await env.queue.enqueue(Q, {"n": "a"})
    b = await env.queue.enqueue(Q, {"n": "b"})
    c = await env.queue.enqueue(Q, {"n": "c"})
    early = await env.queue.enqueue(Q, {"n": "early"}, available_at=now - timedelta(hours=1))
    await env.queue.enqueue("other", {"n": "elsewhere"})

    assert await claim_all(env.queue, "w1") == [early.id, a.id, b.id, c.id]
    assert await env.queue.get(later.id) == later


async def test_claim_leases_the_job(env: QueueEnv) -> None:
    queued = await env.queue.enqueue(Q, {})

    job = await env.queue.claim(Q, "w1", lease=LONG)

    assert job is not None
    assert job.id == queued.id
    assert (job.status, job.attempts, job.lease_owner) == (JobStatus.RUNNING, 1, "w1")
    assert job.lease_expires_at is not None
    assert job.lease_expires_at - job.updated_at == LONG
    assert job.updated_at >= queued.updated_at
    assert await env.queue.get(job.id) == job
    assert await env.queue.claim(Q, "w2", lease=LONG) is None


async def test_claim_returns_none_when_nothing_is_available(env: QueueEnv) -> None:
    assert await env.queue.claim(Q, "w1", lease=LONG) is None
    await env.queue.enqueue("other", {})
    assert await env.queue.claim(Q, "w1", lease=LONG) is None


async def test_claim_rejects_a_non_positive_lease(env: QueueEnv) -> None:
    await env.queue.enqueue(Q, {})

    with pytest.raises(InvalidRequest):
        await env.queue.claim(Q, "w1", lease=timedelta(0))
    assert await env.queue.claim(Q, "w1", lease=LONG) is not None


async def test_concurrent_claimers_never_get_the_same_job(env: QueueEnv) -> None:
    expected = {(await env.queue.enqueue(Q, {"i": i})).id for i in range(20)}
    claimed: dict[str, list[str]] = {}

    async def claimer(owner: str) -> None:
        claimed[owner] = await claim_all(env.queue, owner)

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(claimer, f"w{i}")

    every = [job_id for ids in claimed.values() for job_id in ids]
    assert len(every) == len(set(every)) == 20
    assert set(every) == expected
    for owner, ids in claimed.items():
        for job_id in ids:
            job = await env.queue.get(job_id)
            assert job is not None
            assert (job.lease_owner, job.attempts) == (owner, 1)


# --- leases ----------------------------------------------------------------------------------


async def test_an_expired_lease_makes_the_job_claimable_again(env: QueueEnv) -> None:
    queued = await env.queue.enqueue(Q, {})
    first = await env.queue.claim(Q, "crashed", lease=env.short)
    assert first is not None
    assert await env.queue.claim(Q, "w2", lease=LONG) is None

    await env.advance(env.short_s)
    second = await env.queue.claim(Q, "w2", lease=LONG)

    assert second is not None
    assert second.id == queued.id
    assert (second.lease_owner, second.attempts, second.status) == ("w2", 2, JobStatus.RUNNING)
    with pytest.raises(LeaseLost):
        await env.queue.extend(queued.id, "crashed", lease=LONG)
    with pytest.raises(LeaseLost):
        await env.queue.complete(queued.id, "crashed")
    with pytest.raises(LeaseLost):
        await env.queue.fail(queued.id, "crashed", error="late")
    done = await env.queue.complete(queued.id, "w2")
    assert done.status is JobStatus.SUCCEEDED


async def test_an_expired_lease_is_lost_even_when_nobody_reclaimed(env: QueueEnv) -> None:
    job = await env.queue.enqueue(Q, {})
    await env.queue.claim(Q, "w1", lease=env.short)

    await env.advance(env.short_s)

    with pytest.raises(LeaseLost):
        await env.queue.complete(job.id, "w1")


async def test_an_expired_lease_on_the_final_attempt_dead_letters_the_job(env: QueueEnv) -> None:
    poison = await env.queue.enqueue(Q, {"crashes": "its worker"}, max_attempts=1)
    claimed = await env.queue.claim(Q, "crashed", lease=env.short)
    assert claimed is not None
    assert claimed.attempts == 1

    await env.advance(env.short_s)
    assert await env.queue.depth(Q) == 1  # still running until a claim dead-letters it
    assert await env.queue.claim(Q, "w2", lease=LONG) is None

    dead = await env.queue.get(poison.id)
    assert dead is not None
    assert (dead.status, dead.attempts, dead.last_error) == (
        JobStatus.FAILED,
        1,
        LEASE_EXPIRED_ON_FINAL_ATTEMPT,
    )
    assert (dead.lease_owner, dead.lease_expires_at) == (None, None)
    assert dead.updated_at >= claimed.updated_at
    assert await env.queue.depth(Q) == 0
    with pytest.raises(LeaseLost):
        await env.queue.complete(poison.id, "crashed")
    await env.advance(env.short_s)
    assert await env.queue.claim(Q, "w3", lease=LONG) is None
    assert await env.queue.get(poison.id) == dead
    assert await env.queue.cancel(poison.id) == dead  # terminal: unchanged


async def test_claim_dead_letters_poison_jobs_and_claims_the_next_one(env: QueueEnv) -> None:
    # A job that crashes its worker every time: each attempt's lease expires.
    poison = await env.queue.enqueue(Q, {"n": "poison"}, max_attempts=2)
    for attempt in (1, 2):
        claimed = await env.queue.claim(Q, "crashed", lease=env.short)
        assert claimed is not None
        assert (claimed.id, claimed.attempts) == (poison.id, attempt)
        await env.advance(env.short_s)
    other_queue = await env.queue.enqueue("other", {})
    healthy = await env.queue.enqueue(Q, {"n": "healthy"})

    claimed = await env.queue.claim(Q, "w2", lease=LONG)

    # The older poison job is skipped and dead-lettered in the same call.
    assert claimed is not None
    assert (claimed.id, claimed.attempts) == (healthy.id, 1)
    dead = await env.queue.get(poison.id)
    assert dead is not None
    assert (dead.status, dead.attempts, dead.last_error) == (
        JobStatus.FAILED,
        2,
        LEASE_EXPIRED_ON_FINAL_ATTEMPT,
    )
    assert await env.queue.depth(Q) == 1  # the healthy job, running
    assert await env.queue.get(other_queue.id) == other_queue


async def test_concurrent_claimers_dead_letter_poison_and_share_the_rest(env: QueueEnv) -> None:
    poison = [await env.queue.enqueue(Q, {"poison": i}, max_attempts=1) for i in range(6)]
    for _ in poison:
        assert await env.queue.claim(Q, "crashed", lease=env.short) is not None
    await env.advance(env.short_s)
    healthy = {(await env.queue.enqueue(Q, {"i": i})).id for i in range(10)}
    claimed: dict[str, list[str]] = {}

    async def claimer(owner: str) -> None:
        claimed[owner] = await claim_all(env.queue, owner)

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(claimer, f"w{i}")

    every = [job_id for ids in claimed.values() for job_id in ids]
    assert sorted(every) == sorted(healthy)
    for job in poison:
        dead = await env.queue.get(job.id)
        assert dead is not None
        assert (dead.status, dead.attempts, dead.last_error) == (
            JobStatus.FAILED,
            1,
            LEASE_EXPIRED_ON_FINAL_ATTEMPT,
        )
    assert await env.queue.depth(Q) == len(healthy)


async def test_attempts_never_exceed_max_attempts(env: QueueEnv) -> None:
    """Claim/expire cycles, mixed with failed attempts: every job ends dead-lettered after
    exactly ``max_attempts`` claims, and no state along the way has more attempts."""
    retry = RetryPolicy(base_s=env.short_s / 10, max_s=env.short_s / 10)
    jobs = [await env.queue.enqueue(Q, {"max": n}, max_attempts=n) for n in (1, 2, 3)]
    claims = dict.fromkeys((job.id for job in jobs), 0)

    for cycle in range(4):
        while (job := await env.queue.claim(Q, f"w{cycle}", lease=env.short)) is not None:
            claims[job.id] += 1
            assert 1 <= job.attempts <= job.max_attempts
            if job.max_attempts == 3 and job.attempts == 1:  # a failure, then crashes
                await env.queue.fail(job.id, f"w{cycle}", error="boom", retry=retry)
        for job_id in claims:
            current = await env.queue.get(job_id)
            assert current is not None
            assert current.attempts <= current.max_attempts, current
            if current.status is JobStatus.QUEUED:
                assert current.attempts < current.max_attempts, current
        await env.advance(env.short_s)
    assert await env.queue.claim(Q, "last", lease=LONG) is None

    for job in jobs:
        final = await env.queue.get(job.id)
        assert final is not None
        assert (final.status, final.attempts, final.last_error) == (
            JobStatus.FAILED,
            job.max_attempts,
            LEASE_EXPIRED_ON_FINAL_ATTEMPT,
        )
        assert claims[job.id] == job.max_attempts
    assert await env.queue.depth(Q) == 0


async def test_extend_pushes_the_lease(env: QueueEnv) -> None:
    job = await env.queue.enqueue(Q, {})
    await env.queue.claim(Q, "w1", lease=env.short)

    extended = await env.queue.extend(job.id, "w1", lease=LONG)
    await env.advance(env.short_s)

    assert extended.lease_expires_at is not None
    assert extended.lease_expires_at - extended.updated_at == LONG
    assert (extended.lease_owner, extended.attempts) == ("w1", 1)
    assert await env.queue.claim(Q, "w2", lease=LONG) is None
    assert (await env.queue.complete(job.id, "w1")).status is JobStatus.SUCCEEDED


async def test_held_operations_check_the_lease(env: QueueEnv) -> None:
    unclaimed = await env.queue.enqueue(Q, {}, available_at=env.now() + timedelta(hours=1))
    held = await env.queue.enqueue(Q, {})
    await env.queue.claim(Q, "owner", lease=LONG)

    for job_id, owner in [(held.id, "intruder"), (unclaimed.id, "owner")]:
        with pytest.raises(LeaseLost):
            await env.queue.extend(job_id, owner, lease=LONG)
        with pytest.raises(LeaseLost):
            await env.queue.complete(job_id, owner)
        with pytest.raises(LeaseLost):
            await env.queue.fail(job_id, owner, error="x")
    current = await env.queue.get(held.id)
    assert current is not None
    assert (current.status, current.lease_owner, current.last_error) == (
        JobStatus.RUNNING,
        "owner",
        None,
    )


async def test_unknown_jobs_raise_job_not_found(env: QueueEnv) -> None:
    with pytest.raises(JobNotFound):
        await env.queue.extend("nope", "w1", lease=LONG)
    with pytest.raises(JobNotFound):
        await env.queue.complete("nope", "w1")
    with pytest.raises(JobNotFound):
        await env.queue.fail("nope", "w1", error="x")
    with pytest.raises(JobNotFound):
        await env.queue.cancel("nope")
    assert await env.queue.get("nope") is None


# --- complete / fail -------------------------------------------------------------------------


async def test_complete_records_the_result_and_ends_the_lease(env: QueueEnv) -> None:
    job = await env.queue.enqueue(Q, {})
    await env.queue.claim(Q, "w1", lease=LONG)

    done = await env.queue.complete(job.id, "w1", result={"pr": 12, "files": ["a.py"]})

    assert (done.status, done.result, done.attempts) == (
        JobStatus.SUCCEEDED,
        {"pr": 12, "files": ["a.py"]},
        1,
    )
    assert (done.lease_owner, done.lease_expires_at) == (None, None)
    assert await env.queue.get(job.id) == done
    assert await env.queue.depth(Q) == 0
    with pytest.raises(LeaseLost):
        await env.queue.complete(job.id, "w1")


async def test_complete_refuses_a_result_that_would_not_read_back(env: QueueEnv) -> None:
    job = await env.queue.enqueue(Q, {})
    held = await env.queue.claim(Q, "w1", lease=LONG)
    assert held is not None
    deep: dict[str, JsonValue] = {"leaf": 1}
    for _ in range(JSON_MAX_DEPTH):  # one level past the cap
        deep = {"d": deep}
    not_json: dict[str, JsonValue] = {"x": math.nan}
    for bad in (deep, not_json):
        with pytest.raises(InvalidRequest):
            await env.queue.complete(job.id, "w1", result=bad)
        assert await env.queue.get(job.id) == held  # unchanged, still held by w1

    at_cap: dict[str, JsonValue] = {"leaf": 1}
    for _ in range(JSON_MAX_DEPTH - 1):
        at_cap = {"d": at_cap}
    done = await env.queue.complete(job.id, "w1", result=at_cap)
    assert (done.status, done.result) == (JobStatus.SUCCEEDED, at_cap)
    assert await env.queue.get(job.id) == done


async def test_fail_requeues_with_backoff(env: QueueEnv) -> None:
    policy = RetryPolicy(base_s=env.short_s, factor=2.0, max_s=60)
    job = await env.queue.enqueue(Q, {}, max_attempts=3)
    await env.queue.claim(Q, "w1", lease=LONG)

    retry1 = await env.queue.fail(job.id, "w1", error="boom 1", retry=policy)

    assert (retry1.status, retry1.attempts, retry1.last_error) == (JobStatus.QUEUED, 1, "boom 1")
    assert (retry1.lease_owner, retry1.lease_expires_at) == (None, None)
    assert retry1.available_at - retry1.updated_at == policy.delay(1)
    assert await env.queue.claim(Q, "w2", lease=LONG) is None
    assert await env.queue.depth(Q) == 1

    await env.advance(env.short_s)
    claimed = await env.queue.claim(Q, "w2", lease=LONG)
    assert claimed is not None
    assert (claimed.id, claimed.attempts, claimed.last_error) == (job.id, 2, "boom 1")

    retry2 = await env.queue.fail(job.id, "w2", error="boom 2", retry=policy)
    assert retry2.available_at - retry2.updated_at == policy.delay(2) == 2 * env.short
    assert (retry2.attempts, retry2.status) == (2, JobStatus.QUEUED)


async def test_fail_without_policy_uses_the_default_backoff(env: QueueEnv) -> None:
    job = await env.queue.enqueue(Q, {})
    await env.queue.claim(Q, "w1", lease=LONG)

    retried = await env.queue.fail(job.id, "w1", error="boom")

    assert retried.available_at - retried.updated_at == RetryPolicy().delay(1)


async def test_fail_dead_letters_after_max_attempts(env: QueueEnv) -> None:
    policy = RetryPolicy(base_s=env.short_s, max_s=env.short_s)
    job = await env.queue.enqueue(Q, {}, max_attempts=2)
    await env.queue.claim(Q, "w1", lease=LONG)
    await env.queue.fail(job.id, "w1", error="first", retry=policy)
    await env.advance(env.short_s)
    await env.queue.claim(Q, "w1", lease=LONG)

    dead = await env.queue.fail(job.id, "w1", error="last", retry=policy)

    assert (dead.status, dead.attempts, dead.last_error) == (JobStatus.FAILED, 2, "last")
    assert (dead.lease_owner, dead.lease_expires_at) == (None, None)
    assert dead.status.is_terminal
    assert dead.attempts_left == 0
    assert await env.queue.get(job.id) == dead
    assert await env.queue.depth(Q) == 0
    await env.advance(env.short_s)
    assert await env.queue.claim(Q, "w1", lease=LONG) is None


# --- cancel / depth --------------------------------------------------------------------------


async def test_cancel_a_queued_job(env: QueueEnv) -> None:
    job = await env.queue.enqueue(Q, {})

    cancelled = await env.queue.cancel(job.id)

    assert cancelled.status is JobStatus.CANCELLED
    assert await env.queue.get(job.id) == cancelled
    assert await env.queue.claim(Q, "w1", lease=LONG) is None
    assert await env.queue.depth(Q) == 0
    assert await env.queue.cancel(job.id) == cancelled  # terminal: unchanged


async def test_cancel_leaves_a_succeeded_job_unchanged(env: QueueEnv) -> None:
    job = await env.queue.enqueue(Q, {})
    await env.queue.claim(Q, "w1", lease=LONG)
    succeeded = await env.queue.complete(job.id, "w1")

    assert await env.queue.cancel(job.id) == succeeded
    assert await env.queue.get(job.id) == succeeded


async def test_cancel_a_running_job_takes_the_lease_away(env: QueueEnv) -> None:
    job = await env.queue.enqueue(Q, {})
    await env.queue.claim(Q, "w1", lease=LONG)

    cancelled = await env.queue.cancel(job.id)

    assert (cancelled.status, cancelled.lease_owner) == (JobStatus.CANCELLED, None)
    with pytest.raises(LeaseLost):
        await env.queue.extend(job.id, "w1", lease=LONG)
    with pytest.raises(LeaseLost):
        await env.queue.complete(job.id, "w1")
    assert await env.queue.get(job.id) == cancelled


async def test_depth_counts_queued_and_running_jobs_of_the_queue(env: QueueEnv) -> None:
    assert await env.queue.depth(Q) == 0
    for _ in range(4):
        await env.queue.enqueue(Q, {})
    await env.queue.enqueue(Q, {}, available_at=env.now() + timedelta(hours=1))
    await env.queue.enqueue("other", {})
    running = await env.queue.claim(Q, "w1", lease=LONG)
    finished = await env.queue.claim(Q, "w1", lease=LONG)
    assert running is not None
    assert finished is not None
    await env.queue.complete(finished.id, "w1")
    queued = await env.queue.claim(Q, "w1", lease=LONG)
    assert queued is not None
    await env.queue.cancel(queued.id)

    assert await env.queue.depth(Q) == 3  # 1 running, 1 queued, 1 queued for later
    assert await env.queue.depth("other") == 1
    assert await env.queue.depth("empty") == 0


# --- wait ------------------------------------------------------------------------------------


async def test_wait_returns_soon_after_an_enqueue_from_another_task(env: QueueEnv) -> None:
    elapsed: list[float] = []

    async def waiter() -> None:
        began = anyio.current_time()
        await env.queue.wait(Q, timeout_s=10)
        elapsed.append(anyio.current_time() - began)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            tg.start_soon(waiter)
            await anyio.sleep(0.1)
            await env.queue.enqueue(Q, {})

    assert len(elapsed) == 2
    assert all(e < 2.0 for e in elapsed), elapsed


async def test_wait_returns_at_once_when_a_job_is_claimable(env: QueueEnv) -> None:
    await env.queue.enqueue(Q, {})

    with anyio.fail_after(2):
        await env.queue.wait(Q, timeout_s=10)


async def test_wait_times_out_when_nothing_comes(env: QueueEnv) -> None:
    async def enqueue_elsewhere() -> None:
        await anyio.sleep(0.05)
        await env.queue.enqueue("other", {})

    began = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(enqueue_elsewhere)
        await env.queue.wait(Q, timeout_s=0.3)
    elapsed = anyio.current_time() - began

    assert 0.29 <= elapsed < 2.0


# --- properties (memory only: they need instant time) ---------------------------------------


_T = TypeVar("_T")


class _JobLifecycle(RuleBasedStateMachine):
    """Random claims (by crashing workers too), lease expiries, extends, fails, completions
    and cancels. Whatever the order, no job ever has more attempts than ``max_attempts``."""

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.clock = ManualClock()
        self.queue = InMemoryWorkQueue(self.clock)
        self.ids: list[str] = []
        self.claims: dict[str, int] = {}

    def run(self, coro: Coroutine[object, object, _T]) -> _T:
        return self.runner.run(coro)

    def pick(self, index: int) -> str:
        return self.ids[index % len(self.ids)]

    @rule(max_attempts=st.integers(1, 3))
    def enqueue(self, max_attempts: int) -> None:
        job = self.run(self.queue.enqueue(Q, {}, max_attempts=max_attempts))
        self.ids.append(job.id)
        self.claims[job.id] = 0

    @rule(owner=st.sampled_from(["w1", "w2"]), lease_s=st.sampled_from([1.0, 10.0]))
    def claim(self, owner: str, lease_s: float) -> None:
        job = self.run(self.queue.claim(Q, owner, lease=timedelta(seconds=lease_s)))
        if job is not None:
            self.claims[job.id] += 1

    @rule(seconds=st.sampled_from([0.5, 2.0, 20.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.ids)
    @rule(
        index=st.integers(0, 99),
        owner=st.sampled_from(["w1", "w2"]),
        action=st.sampled_from(["extend", "complete", "fail"]),
    )
    def held_call(self, index: int, owner: str, action: str) -> None:
        job_id = self.pick(index)
        calls: dict[str, Callable[[], Coroutine[object, object, Job]]] = {
            "extend": lambda: self.queue.extend(job_id, owner, lease=timedelta(seconds=5)),
            "complete": lambda: self.queue.complete(job_id, owner),
            "fail": lambda: self.queue.fail(
                job_id, owner, error="boom", retry=RetryPolicy(base_s=1, max_s=1)
            ),
        }
        with contextlib.suppress(LeaseLost):
            self.run(calls[action]())

    @precondition(lambda self: self.ids)
    @rule(index=st.integers(0, 99))
    def cancel(self, index: int) -> None:
        self.run(self.queue.cancel(self.pick(index)))

    @invariant()
    def attempts_stay_within_max_attempts(self) -> None:
        for job_id, claims in self.claims.items():
            job = self.run(self.queue.get(job_id))
            assert job is not None
            assert job.attempts == claims <= job.max_attempts, job
            if job.status is JobStatus.QUEUED:
                assert job.attempts < job.max_attempts, job
            if job.last_error == LEASE_EXPIRED_ON_FINAL_ATTEMPT:
                assert (job.status, job.attempts) == (JobStatus.FAILED, job.max_attempts), job

    def teardown(self) -> None:
        self.runner.close()


def test_attempts_never_exceed_max_attempts_in_any_interleaving() -> None:
    run_state_machine_as_test(
        _JobLifecycle,
        settings=settings(max_examples=40, stateful_step_count=25, deadline=None),
    )
