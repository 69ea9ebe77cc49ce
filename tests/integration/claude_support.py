"""Shared by the Claude Code tests (integration and contract): the real ``claude`` binary,
a ClaudeSpec pointed at a scripted model server, and a process census.

"No leftover processes" is checked by an environment marker, as in
``cli_support`` (whose census helpers are reused): Claude Code runs each Bash
tool command in a session and process group of its own (``setsid``), so the CLI's process
group alone does not cover its tools; every process of a run inherits the run's
environment, so a unique variable put there finds all of them in ``/proc``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path, PurePosixPath
from typing import TypeVar

import pytest

from codeyard.adapters.claude import ClaudeConfig, ClaudeSpec
from codeyard.adapters.cli.agent import CliCodeAgent, local_agent
from codeyard.adapters.cli.types import InterruptStep
from codeyard.domain.agent import AgentRequest
from codeyard.domain.events import AgentEvent
from codeyard.testing.model_server import ModelServer, Scenario
from tests.integration import cli_support
from tests.integration.cli_support import CensusHarness

API_KEY = "sk-ant-codeyard-test-5b7e2d"
T = TypeVar("T")


def need_claude() -> Path:
    return cli_support.need_binary("claude")


def claude_spec(
    base_url: str,
    *,
    marker: str,
    max_retries: int = 0,
    interrupt: tuple[InterruptStep, ...] | None = None,
    workdir: str | None = None,
) -> ClaudeSpec:
    config = ClaudeConfig(
        binary=str(need_claude()),
        base_url=base_url,
        api_key=API_KEY,
        max_retries=max_retries,
        workdir=workdir,
        extra_env={cli_support.MARKER_ENV: marker},
    )
    if interrupt is not None:
        config = dataclasses.replace(config, interrupt=interrupt)
    return ClaudeSpec(config)


def assert_no_secret(events: list[AgentEvent]) -> None:
    cli_support.assert_no_secret(events, API_KEY)


class ClaudeHarness(CensusHarness[ClaudeSpec]):
    """A Claude agent (local subprocesses, private HOME and workdir under ``tmp_path``)
    pointed at ``server``, with a census of the run's processes."""

    def __init__(
        self,
        server: ModelServer,
        tmp_path: Path,
        *,
        max_retries: int = 0,
        interrupt: tuple[InterruptStep, ...] | None = None,
    ) -> None:
        super().__init__(
            "claude",
            server,
            tmp_path,
            lambda marker: claude_spec(
                server.base_url, marker=marker, max_retries=max_retries, interrupt=interrupt
            ),
        )

    def body(self, index: int) -> str:
        """The ``index``-th main model request's body, as JSON text."""
        return json.dumps(self.server.model_requests()[index].body, ensure_ascii=False)

    def assert_nothing_left(self) -> None:
        self.assert_census_clean()


@contextlib.asynccontextmanager
async def claude_harness(
    scenario: Scenario,
    tmp_path: Path,
    *,
    max_retries: int = 0,
    interrupt: tuple[InterruptStep, ...] | None = None,
) -> AsyncIterator[ClaudeHarness]:
    async with ModelServer(scenario) as server:
        yield ClaudeHarness(server, tmp_path, max_retries=max_retries, interrupt=interrupt)


# --- the CodeAgent contract suite (tests/contract/test_code_agent.py) ---------------------

#: The session the contract's resume test names. Claude resumes by session id or title and
#: refuses an unknown one, so a real session with this title is made first.
CONTRACT_SESSION = "0f3c2a9e-session"


def _seed_session(spec: ClaudeSpec, home: Path, workdir: Path) -> None:
    """Run the real CLI once with ``--name CONTRACT_SESSION`` in this HOME and workdir
    (Claude files sessions by project folder), so ``--resume=CONTRACT_SESSION`` finds it."""
    seed = AgentRequest(provider="claude", prompt="seed the contract session")
    invocation = spec.invocation(seed, home=PurePosixPath(home))
    argv = list(invocation.argv)
    argv[argv.index("--") : argv.index("--")] = ["--name", CONTRACT_SESSION]
    done = subprocess.run(
        argv,
        env={**invocation.env, "HOME": str(home)},
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"seeding the claude session failed: {done.stderr}"


def claude_subject(
    make: Callable[[CliCodeAgent, str, str, cli_support.Leftovers], T],
    request: pytest.FixtureRequest,
    quick: str,
    hang: str,
) -> T:
    """The contract's subject for the real Claude CLI: ``make(agent, quick, hang,
    leftovers)``. One scripted server answers both prompts: a request without the hang
    prompt gets the one-line side reply (the quick turn), the hang prompt's a stall."""
    need_claude()
    server = cli_support.start_server(request, cli_support.quick_or_hang(hang))
    marker = cli_support.new_marker()
    tmp_path: Path = request.getfixturevalue("tmp_path")
    home, workdir = tmp_path / "home", tmp_path / "work"
    workdir.mkdir()
    # The contract's requests name no workdir: the spec's default puts them where the
    # seeded session lives (never the test process's own cwd, the repository).
    spec = claude_spec(server.base_url, marker=marker, workdir=str(workdir))
    _seed_session(spec, home, workdir)
    agent = local_agent(spec, home)

    return make(agent, quick, hang, cli_support.marker_leftovers(marker, agent))
