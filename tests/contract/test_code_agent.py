"""The CodeAgent contract (codeyard.ports.code_agent), one suite for every adapter.

Each adapter is one param of the ``agent`` fixture: a factory in ``_SUBJECTS`` returning an
:class:`AgentUnderTest`. Only ``scripted`` exists today; the real CLI adapters (issue #3)
add a factory that arranges two scenarios on their local scripted model server: a quick
turn that succeeds, and a turn that starts and then hangs. The checks themselves live in
the ``check_*`` / ``assert_*`` helpers so other suites can reuse them.

Why no test feeds ``AgentRequest.model_construct(prompt="")`` to ``execute``: the domain
model is the validation boundary (``__init__`` and ``parse`` both validate and the model is
frozen), and ``model_construct`` is pydantic's explicit "already validated, trust me"
escape hatch. Requiring every adapter to re-validate would duplicate the domain checks in
five places and still not stop a caller determined to bypass them. What the contract does
check is the invalid input only an adapter can see: a request for another provider
(``UnsupportedProvider``) and a resume the adapter cannot do (``ResumeUnsupported``), both
raised before any event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import pytest

from codeyard.adapters.memory.code_agent import Pause, ScriptedCodeAgent, default_script
from codeyard.domain.agent import AgentCapabilities, AgentRequest, ResultStatus
from codeyard.domain.errors import CodeyardError, InvalidInput, ResumeUnsupported
from codeyard.domain.events import AgentEvent
from codeyard.ports.code_agent import CodeAgent
from tests.integration.claude_support import claude_subject
from tests.integration.codex_gemini_support import cli_subject
from tests.integration.droid_support import droid_subject
from tests.integration.opencode_support import opencode_subject

pytestmark = pytest.mark.anyio

#: Upper bound for anything that should be quick; a hung adapter fails instead of hanging.
DEADLINE_S = 20.0


@dataclass(frozen=True)
class AgentUnderTest:
    agent: CodeAgent
    #: A turn that ends by itself, successfully, within a few seconds.
    quick_prompt: str
    #: A turn that emits at least one event, then nothing for a long time (a hung CLI).
    hang_prompt: str
    #: What the adapter still has running (processes, runs...); empty when idle.
    leftovers: Callable[[], Awaitable[set[str]]]

    def request(self, prompt: str | None = None, **fields: Any) -> AgentRequest:
        return AgentRequest(
            provider=self.agent.provider, prompt=prompt or self.quick_prompt, **fields
        )


# --- subjects ------------------------------------------------------------------------------

QUICK = "add a README"
HANG = "hang after init"


def _scripted(_: pytest.FixtureRequest) -> AgentUnderTest:
    def script(request: AgentRequest) -> list[Any]:
        steps = default_script(request)
        return [steps[0], Pause(3600)] if request.prompt == HANG else steps

    agent = ScriptedCodeAgent(script)

    async def leftovers() -> set[str]:
        return set(agent.running)

    return AgentUnderTest(agent, QUICK, HANG, leftovers)


_SUBJECTS: dict[str, Callable[[pytest.FixtureRequest], AgentUnderTest]] = {
    "scripted": _scripted,
    "claude": lambda r: claude_subject(AgentUnderTest, r, QUICK, HANG),
    "codex": lambda r: cli_subject(AgentUnderTest, "codex", r, QUICK, HANG),
    "gemini": lambda r: cli_subject(AgentUnderTest, "gemini", r, QUICK, HANG),
    "droid": lambda r: droid_subject(AgentUnderTest, r, QUICK, HANG),
    "opencode": lambda r: opencode_subject(AgentUnderTest, r, QUICK, HANG),
}


@pytest.fixture(params=sorted(_SUBJECTS))
def agent(request: pytest.FixtureRequest) -> AgentUnderTest:
    return _SUBJECTS[request.param](request)


# --- reusable checks -----------------------------------------------------------------------


async def collect(agent: CodeAgent, request: AgentRequest) -> list[AgentEvent]:
    events: list[AgentEvent] = []
    with anyio.fail_after(DEADLINE_S):
        async with contextlib.aclosing(agent.execute(request)) as stream:
            async for event in stream:
                events.append(event)
    return events


def assert_well_formed_run(events: Iterable[AgentEvent], request: AgentRequest) -> AgentEvent:
    """seq 0..n-1, exactly one result and it is last, ids stamped; returns the result."""
    events = list(events)
    assert events, "a run always yields at least its result"
    assert [e.seq for e in events] == list(range(len(events)))
    results = [i for i, e in enumerate(events) if e.is_terminal]
    assert results == [len(events) - 1], f"result positions {results} of {len(events)}"
    for event in events:
        assert event.provider == request.provider
        assert event.run_id == request.id
        assert event.worker_id == request.worker_id
        assert event.task_id == request.task_id
    assert len({e.id for e in events}) == len(events), "event ids are unique"
    final = events[-1]
    assert final.payload.type == "result"
    assert final.payload.result.provider == request.provider
    return final


async def check_rejected_before_any_event(
    agent: CodeAgent, request: AgentRequest, error: type[CodeyardError]
) -> None:
    events: list[AgentEvent] = []

    async def drain() -> None:
        async with contextlib.aclosing(agent.execute(request)) as stream:
            async for event in stream:
                events.append(event)

    with anyio.fail_after(DEADLINE_S), pytest.raises(error):
        await drain()
    assert events == []


def result_status(event: AgentEvent) -> ResultStatus:
    assert event.payload.type == "result"
    return event.payload.result.status


# --- the contract --------------------------------------------------------------------------


async def test_implements_the_port(agent: AgentUnderTest) -> None:
    assert isinstance(agent.agent, CodeAgent)
    assert agent.agent.provider == agent.agent.provider.lower() != ""
    assert isinstance(agent.agent.capabilities(), AgentCapabilities)
    assert agent.agent.capabilities() == agent.agent.capabilities()


async def test_quick_turn_is_well_formed_and_succeeds(agent: AgentUnderTest) -> None:
    request = agent.request(worker_id="worker-1", task_id="task-1")
    final = assert_well_formed_run(await collect(agent.agent, request), request)
    assert result_status(final) is ResultStatus.SUCCESS
    assert await agent.leftovers() == set()


async def test_concurrent_runs_each_number_from_zero(agent: AgentUnderTest) -> None:
    requests = [agent.request() for _ in range(3)]
    runs: dict[str, list[AgentEvent]] = {}

    async def run(request: AgentRequest) -> None:
        runs[request.id] = await collect(agent.agent, request)

    async with anyio.create_task_group() as tg:
        for request in requests:
            tg.start_soon(run, request)
    for request in requests:
        assert_well_formed_run(runs[request.id], request)


async def test_request_for_another_provider_raises_before_any_event(
    agent: AgentUnderTest,
) -> None:
    other = "not-" + agent.agent.provider
    request = AgentRequest(provider=other, prompt=agent.quick_prompt)
    await check_rejected_before_any_event(agent.agent, request, InvalidInput)


async def test_resume_follows_the_capability(agent: AgentUnderTest) -> None:
    request = agent.request(session_id="0f3c2a9e-session")
    if agent.agent.capabilities().resume:
        final = assert_well_formed_run(await collect(agent.agent, request), request)
        assert result_status(final) is ResultStatus.SUCCESS
    else:
        await check_rejected_before_any_event(agent.agent, request, ResumeUnsupported)


async def test_cancel_ends_the_run_with_a_cancelled_result(agent: AgentUnderTest) -> None:
    request = agent.request(agent.hang_prompt)
    events: list[AgentEvent] = []
    with anyio.fail_after(DEADLINE_S):
        async with contextlib.aclosing(agent.agent.execute(request)) as stream:
            async for event in stream:
                events.append(event)
                if len(events) == 1:
                    await agent.agent.cancel(request.id)
                    await agent.agent.cancel(request.id)  # idempotent
    final = assert_well_formed_run(events, request)
    assert result_status(final) is ResultStatus.CANCELLED
    assert await agent.leftovers() == set()


async def test_cancel_of_unknown_or_finished_id_is_a_noop(agent: AgentUnderTest) -> None:
    await agent.agent.cancel("no-such-request")
    request = agent.request()
    assert_well_formed_run(await collect(agent.agent, request), request)
    await agent.agent.cancel(request.id)
    # ... and it does not poison a later run that reuses nothing but the adapter.
    again = agent.request()
    final = assert_well_formed_run(await collect(agent.agent, again), again)
    assert result_status(final) is ResultStatus.SUCCESS


async def test_cancel_targets_only_its_own_run(agent: AgentUnderTest) -> None:
    hung, quick = agent.request(agent.hang_prompt), agent.request()
    hung_events: list[AgentEvent] = []
    hung_started = anyio.Event()

    async def run_hung() -> None:
        async with contextlib.aclosing(agent.agent.execute(hung)) as stream:
            async for event in stream:
                hung_events.append(event)
                hung_started.set()

    with anyio.fail_after(DEADLINE_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_hung)
            quick_events = await collect(agent.agent, quick)
            await agent.agent.cancel(quick.id)  # finished: must not touch the hung run
            await hung_started.wait()
            await agent.agent.cancel(hung.id)
    assert result_status(assert_well_formed_run(quick_events, quick)) is ResultStatus.SUCCESS
    assert result_status(assert_well_formed_run(hung_events, hung)) is ResultStatus.CANCELLED


async def test_timeout_ends_a_hung_run_with_a_timeout_result(agent: AgentUnderTest) -> None:
    request = agent.request(agent.hang_prompt, timeout_s=0.5, idle_timeout_s=0.5)
    final = assert_well_formed_run(await collect(agent.agent, request), request)
    assert result_status(final) is ResultStatus.TIMEOUT
    assert await agent.leftovers() == set()


async def test_consumer_cancellation_propagates_and_leaves_nothing_running(
    agent: AgentUnderTest,
) -> None:
    request = agent.request(agent.hang_prompt)
    events: list[AgentEvent] = []
    with anyio.fail_after(DEADLINE_S):
        # Cancelled 0.5 s after the first event, while the run hangs (a fixed 0.5 s from
        # the start would fire before a real CLI's first event: Gemini takes ~1.3 s).
        with anyio.move_on_after(DEADLINE_S) as scope:
            async with contextlib.aclosing(agent.agent.execute(request)) as stream:
                async for event in stream:
                    events.append(event)
                    scope.deadline = min(scope.deadline, anyio.current_time() + 0.5)
        # Swallowing the cancellation would end the loop normally: the scope would not
        # have caught it, and a synthesized result would likely have been yielded.
        assert scope.cancelled_caught
        assert events, "the hang scenario emits its first event before hanging"
        assert not any(e.is_terminal for e in events)
        assert [e.seq for e in events] == list(range(len(events)))
        assert await agent.leftovers() == set()
    # The adapter is still usable afterwards.
    again = agent.request()
    assert result_status(assert_well_formed_run(await collect(agent.agent, again), again)) is (
        ResultStatus.SUCCESS
    )
