"""The Python API on the in-process manager: one request, one worker, removed after."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import codeyard
from codeyard.adapters.memory.event_bus import InMemoryEventBus
from codeyard.app.api import Codeyard
from codeyard.app.settings import Settings
from codeyard.client import CodeyardClient
from codeyard.domain.agent import AgentRequest, ResultStatus
from codeyard.domain.errors import InvalidRequest
from codeyard.domain.events import ResultPayload
from codeyard.domain.worker import Module, WorkerSpec
from tests.unit.tasks_support import InProcessManager, file_writer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def cy(tmp_path: Path) -> AsyncIterator[tuple[Codeyard, InProcessManager]]:
    bus = InMemoryEventBus()
    manager = InProcessManager(bus, tmp_path, lambda: file_writer({"[hello]": {"h.txt": "hi"}}))
    async with manager.running():
        yield Codeyard(CodeyardClient(bus), spec=WorkerSpec(modules=(Module.PYTHON,))), manager


async def test_run_returns_the_result_and_removes_the_worker(
    cy: tuple[Codeyard, InProcessManager], tmp_path: Path
) -> None:
    api, manager = cy
    result = await api.run(AgentRequest(prompt="[hello] write it", provider="scripted"))
    assert result.status is ResultStatus.SUCCESS
    assert result.text.startswith("Done: [hello]")
    (worker,) = manager.created
    assert manager.deleted == [worker]
    assert (tmp_path / worker / "h.txt").read_text() == "hi"


async def test_stream_yields_the_runs_events_ending_with_its_result(
    cy: tuple[Codeyard, InProcessManager],
) -> None:
    api, manager = cy
    request = AgentRequest(prompt="stream me", provider="scripted")
    events = [e async for e in api.stream(request)]
    assert {e.run_id for e in events} == {request.id}
    assert [e.seq for e in events] == list(range(len(events)))
    assert isinstance(events[-1].payload, ResultPayload)
    assert manager.deleted == manager.created


def test_the_worker_spec_comes_from_the_request_over_the_defaults() -> None:
    api = Codeyard(CodeyardClient(InMemoryEventBus()), spec=WorkerSpec(instructions="base"))
    spec = api.worker_spec(
        AgentRequest(prompt="x", provider="codex", allowed_commands=("git",), instructions="mine")
    )
    assert (spec.agent, spec.instructions, spec.allowed_commands) == ("codex", "mine", ("git",))
    assert api.worker_spec(AgentRequest(prompt="x")).instructions == "base"


async def test_a_session_to_resume_is_refused_before_any_worker(
    cy: tuple[Codeyard, InProcessManager],
) -> None:
    api, manager = cy
    with pytest.raises(InvalidRequest):
        await api.run(AgentRequest(prompt="x", provider="scripted", session_id="s-1"))
    assert manager.created == []


async def test_client_settings_refuse_manager_overrides() -> None:
    settings = Settings(backends={"event_bus": "redis"}, redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(InvalidRequest):
        async with Codeyard.from_settings(settings, agent_base_url="http://x"):
            pass


def test_the_package_exports_the_api_lazily() -> None:
    assert codeyard.Codeyard is Codeyard
    with pytest.raises(AttributeError):
        _ = codeyard.Nope
