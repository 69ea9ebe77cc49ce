"""Shared by the OpenCode integration tests and the CodeAgent contract suite: the real
binary (or a skip / CI failure when it is not installed) and the contract's subject."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio.from_thread
import pytest

from codeyard.adapters.opencode import OpencodeCodeAgent, OpencodeConfig
from codeyard.adapters.process.local import LocalProcessLauncher
from codeyard.testing.agents import AgentBinaryMissing, agent_binary
from codeyard.testing.model_server import ModelServer, Scenario, Stall, Text
from tests.services import service_unavailable

T = TypeVar("T")
Leftovers = Callable[[], Awaitable[set[str]]]


def opencode_binary() -> str:
    """The pinned ``opencode`` binary; skips (fails in CI) when it is not installed."""
    try:
        return str(agent_binary("opencode"))
    except AgentBinaryMissing as exc:
        service_unavailable("the opencode CLI", str(exc), "scripts/install-agents opencode")


def opencode_subject(
    make: Callable[[OpencodeCodeAgent, str, str, Leftovers], T],
    request: pytest.FixtureRequest,
    quick: str,
    hang: str,
) -> T:
    """The contract's subject: ``make(agent, quick, hang, leftovers)``.

    One scripted server answers both prompts: a conversation holding the hang prompt is
    a "side" request answered with a stall, anything else gets the quick answer. The
    agent does not keep its server between runs (``keep_server=False``): the contract's
    factories are synchronous and nothing could stop a kept server at the end of the test
    in the test's own event loop, so "nothing left running" includes the server.
    """
    binary = opencode_binary()
    scenario = Scenario(
        turns=[[Text("Added the README.", chunk_size=0)]],
        side_reply=[Text("Starting on it.", chunk_size=0), Stall()],
        is_side=lambda _dialect, body: hang in json.dumps(body),
    )
    stack = contextlib.ExitStack()
    request.addfinalizer(stack.close)
    portal = stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio"))
    server = stack.enter_context(portal.wrap_async_context_manager(ModelServer(scenario)))
    tmp_path: Path = request.getfixturevalue("tmp_path")
    config = OpencodeConfig(
        binary=binary, base_url=server.base_url, model="mock-model", keep_server=False
    )
    # The contract's requests name no workdir: the server's own directory is its HOME.
    agent = OpencodeCodeAgent(LocalProcessLauncher(), tmp_path / "home", config=config)

    async def leftovers() -> set[str]:
        left = {f"run {run_id}" for run_id in agent.running}
        if agent.server is not None:
            left.add(f"opencode server pid {agent.server.handle.pid}")
        return left

    return make(agent, quick, hang, leftovers)
