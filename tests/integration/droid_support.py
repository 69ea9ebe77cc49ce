"""Shared by the Droid CLI tests (integration and contract): the real ``droid`` binary, a
DroidSpec pointed at a scripted model server, and a census of the run's processes.

The census is by environment marker (see ``cli_support``): Droid starts each shell tool in
a session of its own (``factory-execute-supervisor``), out of reach of the CLI's process
group.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from codeyard.adapters.cli.agent import CliCodeAgent, local_agent
from codeyard.adapters.droid import DroidOptions, DroidSpec, DroidWireApi
from codeyard.domain.events import AgentEvent
from codeyard.testing.model_server import ModelServer, Scenario
from tests.integration import cli_support
from tests.integration.cli_support import CensusHarness

API_KEY = "sk-codeyard-droid-7d41e0"
MODEL = "mock-model"
#: The model API each wire format calls, as the server records it.
WIRE_PATHS = {
    DroidWireApi.ANTHROPIC: "/v1/messages",
    DroidWireApi.CHAT_COMPLETIONS: "/v1/chat/completions",
    DroidWireApi.RESPONSES: "/v1/responses",
}

T = TypeVar("T")


def need_droid() -> Path:
    return cli_support.need_binary("droid")


def assert_no_secret(events: list[AgentEvent]) -> None:
    cli_support.assert_no_secret(events, API_KEY)


def base_url_for(server_url: str, wire: DroidWireApi) -> str:
    # The Anthropic SDK appends /v1/messages; the OpenAI SDK expects the /v1 root.
    return server_url if wire is DroidWireApi.ANTHROPIC else f"{server_url}/v1"


def droid_spec(
    server_url: str,
    *,
    marker: str,
    wire: DroidWireApi = DroidWireApi.ANTHROPIC,
    workdir: str | None = None,
    airgapped: bool = True,
) -> DroidSpec:
    return DroidSpec(
        DroidOptions(
            binary=str(need_droid()),
            wire_api=wire,
            base_url=base_url_for(server_url, wire),
            api_key=API_KEY,
            model=MODEL,
            workdir=workdir,
            airgapped=airgapped,
            env={cli_support.MARKER_ENV: marker},
        )
    )


class Harness(CensusHarness[DroidSpec]):
    """Droid (local subprocesses, private HOME and workdir under ``tmp_path``) pointed at
    ``server``, with a census of the run's processes."""

    def __init__(
        self, server: ModelServer, tmp_path: Path, wire: DroidWireApi, *, airgapped: bool = True
    ) -> None:
        self.wire = wire

        def make_spec(marker: str) -> DroidSpec:
            return droid_spec(server.base_url, marker=marker, wire=wire, airgapped=airgapped)

        super().__init__("droid", server, tmp_path, make_spec)

    def model_bodies(self) -> list[str]:
        return [json.dumps(r.body) for r in self.server.model_requests()]

    async def assert_nothing_left(self, within_s: float = 0.0) -> None:
        """No process of the run is left (after ``within_s``: Droid's tool supervisor
        polls its owner every 2 s before it kills the tool's group)."""
        if within_s:
            await cli_support.wait_for(
                lambda: cli_support.processes_with(self.marker) == [], within_s
            )
        self.assert_census_clean()


@contextlib.asynccontextmanager
async def run_harness(
    scenario: Scenario,
    tmp_path: Path,
    wire: DroidWireApi = DroidWireApi.ANTHROPIC,
    *,
    airgapped: bool = True,
) -> AsyncIterator[Harness]:
    async with ModelServer(scenario) as server:
        yield Harness(server, tmp_path, wire, airgapped=airgapped)


# --- the CodeAgent contract suite (tests/contract/test_code_agent.py) ---------------------


def droid_subject(
    make: Callable[[CliCodeAgent, str, str, cli_support.Leftovers], T],
    request: pytest.FixtureRequest,
    quick: str,
    hang: str,
) -> T:
    """The contract's subject for the real droid CLI: ``make(agent, quick, hang,
    leftovers)``. One scripted server (in its own thread: the factories are synchronous)
    answers both prompts; replies are chosen from the request body, so ``is_side`` routes
    by prompt: the quick turn gets the one-line side reply, the hang prompt a stall."""
    need_droid()
    server = cli_support.start_server(request, cli_support.quick_or_hang(hang))
    tmp_path: Path = request.getfixturevalue("tmp_path")
    workdir = tmp_path / "work"
    workdir.mkdir()
    marker = cli_support.new_marker()
    agent = local_agent(
        droid_spec(server.base_url, marker=marker, workdir=str(workdir)), tmp_path / "home"
    )

    return make(agent, quick, hang, cli_support.marker_leftovers(marker, agent))
