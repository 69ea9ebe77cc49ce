"""Shared by the Codex and Gemini CLI tests (integration and contract): the real binaries,
specs pointed at a scripted model server, and a process census by environment marker
(see ``cli_support``: Gemini detaches its shell tools into process groups of their own).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path, PurePosixPath
from typing import TypeVar

import pytest

from codeyard.adapters.cli.agent import CliCodeAgent, local_agent
from codeyard.adapters.cli.home import write_home_files
from codeyard.adapters.codex import CodexOptions, CodexSpec
from codeyard.adapters.gemini import GeminiOptions, GeminiSpec
from codeyard.domain.agent import AgentRequest
from codeyard.domain.events import AgentEvent
from codeyard.testing.model_server import ModelServer, Scenario
from tests.integration import cli_support
from tests.integration.cli_support import CensusHarness

API_KEY = "sk-codeyard-test-3c1f9a"
CODEX_MODEL = "mock-model"
GEMINI_MODEL = "gemini-2.5-pro"

T = TypeVar("T")


def codex_spec(
    base_url: str, *, marker: str, workdir: str | None = None, env: dict[str, str] | None = None
) -> CodexSpec:
    return CodexSpec(
        CodexOptions(
            binary=str(cli_support.need_binary("codex")),
            base_url=f"{base_url}/v1",
            api_key=API_KEY,
            model=CODEX_MODEL,
            max_retries=0,
            workdir=workdir,
            env={**(env or {}), cli_support.MARKER_ENV: marker},
        )
    )


def gemini_spec(
    base_url: str, *, marker: str, workdir: str | None = None, env: dict[str, str] | None = None
) -> GeminiSpec:
    return GeminiSpec(
        GeminiOptions(
            binary=str(cli_support.need_binary("gemini")),
            base_url=base_url,
            api_key=API_KEY,
            model=GEMINI_MODEL,
            max_attempts=1,
            workdir=workdir,
            env={**(env or {}), cli_support.MARKER_ENV: marker},
        )
    )


def assert_no_secret(events: list[AgentEvent]) -> None:
    cli_support.assert_no_secret(events, API_KEY)


class Harness(CensusHarness[CodexSpec | GeminiSpec]):
    """Codex or Gemini (local subprocesses, private HOME and workdir under ``tmp_path``)
    pointed at ``server``, with a census of the run's processes."""

    def __init__(
        self,
        provider: str,
        server: ModelServer,
        tmp_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        make_spec = codex_spec if provider == "codex" else gemini_spec
        super().__init__(
            provider,
            server,
            tmp_path,
            lambda marker: make_spec(server.base_url, marker=marker, env=env),
        )

    def assert_nothing_left(self) -> None:
        self.assert_census_clean()


@contextlib.asynccontextmanager
async def run_harness(
    provider: str, scenario: Scenario, tmp_path: Path, env: dict[str, str] | None = None
) -> AsyncIterator[Harness]:
    async with ModelServer(scenario) as server:
        yield Harness(provider, server, tmp_path, env)


def body_text(h: Harness, index: int) -> str:
    """The ``index``-th main model request's body, as JSON text."""
    return json.dumps(h.server.model_requests()[index].body)


# --- the CodeAgent contract suite (tests/contract/test_code_agent.py) ---------------------

#: The session the contract's resume test names: a real one is made for the CLIs that
#: refuse an unknown id (Gemini exits 42), so that "resume follows the capability" holds.
CONTRACT_SESSION = "0f3c2a9e-session"

_gemini_templates: dict[str, tuple[Path, Path]] = {}


def _seeded_gemini(request: pytest.FixtureRequest, server: ModelServer) -> tuple[Path, Path]:
    """(home, workdir) holding a real Gemini session named ``CONTRACT_SESSION``: made
    once per test session by the real CLI (``--session-id``), copied for each test. The
    workdir is shared: Gemini files sessions by project folder."""
    if "gemini" not in _gemini_templates:
        root: Path = request.getfixturevalue("tmp_path_factory").mktemp("gemini-contract")
        home, workdir = root / "home", root / "work"
        workdir.mkdir()
        spec = gemini_spec(server.base_url, marker=cli_support.new_marker(), workdir=str(workdir))
        seed = AgentRequest(provider="gemini", prompt="seed the contract session")
        invocation = spec.invocation(seed, home=PurePosixPath(home))
        write_home_files(home, invocation.files)
        done = subprocess.run(
            [*invocation.argv, f"--session-id={CONTRACT_SESSION}"],
            env={**invocation.env, "HOME": str(home)},
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"seeding the gemini session failed: {done.stderr}"
        assert CONTRACT_SESSION in done.stdout
        _gemini_templates["gemini"] = (home, workdir)
    home, workdir = _gemini_templates["gemini"]
    copy = request.getfixturevalue("tmp_path") / "home"
    shutil.copytree(home, copy)
    return copy, workdir


def cli_subject(
    make: Callable[[CliCodeAgent, str, str, cli_support.Leftovers], T],
    provider: str,
    request: pytest.FixtureRequest,
    quick: str,
    hang: str,
) -> T:
    """The contract's subject for the real ``provider`` CLI: ``make(agent, quick, hang,
    leftovers)``.

    One scripted server answers both prompts. Replies are chosen per request from its
    body, so the scenario's ``is_side`` hook routes by prompt: a request without the hang
    prompt gets the one-line side reply (the quick turn), the hang prompt's gets main
    turn 0, a stall.
    """
    cli_support.need_binary(provider)
    server = cli_support.start_server(request, cli_support.quick_or_hang(hang))
    marker = cli_support.new_marker()
    tmp_path: Path = request.getfixturevalue("tmp_path")
    if provider == "gemini":
        home, workdir = _seeded_gemini(request, server)
        spec: CodexSpec | GeminiSpec = gemini_spec(
            server.base_url, marker=marker, workdir=str(workdir)
        )
    else:
        home, workdir = tmp_path / "home", tmp_path / "work"
        workdir.mkdir()
        spec = codex_spec(server.base_url, marker=marker, workdir=str(workdir))
    agent = local_agent(spec, home)

    return make(agent, quick, hang, cli_support.marker_leftovers(marker, agent))
