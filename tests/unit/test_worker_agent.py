"""build_agent: every built-in provider takes the worker's binary, endpoint, key and model.

A recording launcher stands in for the process launcher: it keeps what each CLI would be
started with (argv, environment) and answers with a process that exits at once, so a turn
ends without any CLI; the files the adapter wrote stay in the HOME. The real CLIs in real
worker containers are covered by tests/e2e/test_providers_docker.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from codeyard.adapters.claude.spec import ClaudeConfig
from codeyard.adapters.codex.spec import CodexOptions
from codeyard.adapters.droid.spec import DroidOptions
from codeyard.adapters.gemini.spec import GeminiOptions
from codeyard.adapters.opencode.config import OpencodeConfig
from codeyard.app.worker_agent import (
    ENDPOINT_MODELS,
    AgentOptions,
    agent_executable,
    build_agent,
    takes_options,
    with_v1,
)
from codeyard.domain.agent import AgentRequest, ResultStatus
from codeyard.domain.errors import InvalidInput, UnsupportedProvider
from codeyard.domain.events import ResultPayload

pytestmark = pytest.mark.anyio

PROVIDERS = ("claude", "codex", "gemini", "droid", "opencode", "opencode-run")
BASE = "http://models.example:8080"
KEY = "sk-worker-agent-unit-5f2c"
#: The URL each CLI must be given for ``BASE`` (the OpenAI dialects need the /v1 root).
URL_SEEN = {
    "claude": BASE,
    "gemini": BASE,
    "droid": BASE,
    "codex": f"{BASE}/v1",
    "opencode": f"{BASE}/v1",
    "opencode-run": f"{BASE}/v1",
}


class _Exited:
    """A process that exited with 1 without a word."""

    pid = None
    returncode = 1

    async def stdout_chunks(self) -> AsyncIterator[bytes]:
        nothing: tuple[bytes, ...] = ()
        for chunk in nothing:
            yield chunk

    async def stderr_chunks(self) -> AsyncIterator[bytes]:
        nothing: tuple[bytes, ...] = ()
        for chunk in nothing:
            yield chunk

    async def signal_group(self, signum: int) -> None:
        pass

    async def wait(self) -> int:
        return 1

    async def aclose(self) -> None:
        pass


@dataclass
class RecordingLauncher:
    starts: list[tuple[tuple[str, ...], dict[str, str]]] = field(default_factory=list)

    async def start(
        self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str | None = None
    ) -> _Exited:
        self.starts.append((tuple(argv), dict(env)))
        return _Exited()


@dataclass(frozen=True)
class Seen:
    """What one turn's CLI got: its argv, environment and the files in its HOME."""

    argv: tuple[str, ...]
    env: dict[str, str]
    files: str

    @property
    def everything(self) -> str:
        return "\n".join([*self.argv, *self.env.values(), self.files])


def read_all(home: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(home.rglob("*")) if p.is_file())


async def one_turn(provider: str, options: AgentOptions, home: Path) -> Seen:
    launcher = RecordingLauncher()
    agent = build_agent(provider, options, home=home, launcher=launcher)
    assert agent.provider == provider
    request = AgentRequest(provider=provider, prompt="hi", timeout_s=30, idle_timeout_s=10)
    results = [
        e.payload.result
        async for e in agent.execute(request)
        if isinstance(e.payload, ResultPayload)
    ]
    assert [r.status for r in results] == [ResultStatus.ERROR]  # the CLI "exited" at once
    assert launcher.starts, "the CLI was never started"
    argv, env = launcher.starts[0]
    files = await anyio.to_thread.run_sync(read_all, home)
    return Seen(argv, env, files)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_every_provider_gets_the_binary_endpoint_and_key(
    tmp_path: Path, provider: str
) -> None:
    binary = f"/opt/{provider}/bin/cli"
    options = AgentOptions(binary=binary, base_url=BASE, api_key=KEY)
    seen = await one_turn(provider, options, tmp_path / "home")
    assert takes_options(provider)
    assert binary in " ".join(seen.argv)
    assert URL_SEEN[provider] in seen.everything
    # The key travels in the environment only: never in argv or a file on disk.
    assert KEY in seen.env.values()
    assert KEY not in "\n".join([*seen.argv, seen.files])
    if provider in ENDPOINT_MODELS:
        assert ENDPOINT_MODELS[provider] in seen.everything
    assert KEY not in repr(options)


@pytest.mark.parametrize("provider", sorted(ENDPOINT_MODELS))
async def test_a_chosen_model_wins_over_the_endpoint_default(tmp_path: Path, provider: str) -> None:
    options = AgentOptions(base_url=BASE, api_key=KEY, model="house-model-7")
    seen = await one_turn(provider, options, tmp_path / "home")
    assert "house-model-7" in seen.everything
    assert ENDPOINT_MODELS[provider] not in seen.everything


async def test_without_an_endpoint_the_cli_keeps_its_own_model(tmp_path: Path) -> None:
    seen = await one_turn("codex", AgentOptions(api_key=KEY), tmp_path / "home")
    assert ENDPOINT_MODELS["codex"] not in seen.everything


async def test_a_codex_endpoint_with_a_path_is_taken_as_the_full_root(tmp_path: Path) -> None:
    options = AgentOptions(base_url="http://gw.example/openai/v2", api_key=KEY)
    seen = await one_turn("codex", options, tmp_path / "home")
    assert "http://gw.example/openai/v2" in seen.files
    assert "/openai/v2/v1" not in seen.files


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h:1", "http://h:1/v1"),
        ("http://h:1/", "http://h:1/v1"),
        ("https://h/v1", "https://h/v1"),
        ("http://h/proxy", "http://h/proxy"),
    ],
)
def test_with_v1_adds_the_root_only_to_a_bare_url(url: str, expected: str) -> None:
    assert with_v1(url) == expected


def test_default_executables_are_the_adapters_own() -> None:
    defaults = {
        "claude": ClaudeConfig().binary,
        "codex": CodexOptions().binary,
        "gemini": GeminiOptions().binary,
        "droid": DroidOptions().binary,
        "opencode": OpencodeConfig().binary,
        "opencode-run": OpencodeConfig().binary,
    }
    assert {p: agent_executable(p, AgentOptions()) for p in PROVIDERS} == defaults
    assert agent_executable("plugin", AgentOptions()) is None
    assert not takes_options("plugin")


def test_plugins_refuse_options_and_unknown_providers_fail(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedProvider):
        build_agent("nope", AgentOptions(), home=tmp_path)
    with pytest.raises(InvalidInput, match="not supported"):
        build_agent("nope", AgentOptions(base_url=BASE), home=tmp_path)
    assert AgentOptions(model="m", path="/shim").overrides() == {"path": "/shim", "model": "m"}
