"""ClaudeSpec: argv, environment, checks and interrupt of one Claude Code turn (no process;
the real CLI runs in tests/integration/test_claude_cli.py)."""

from __future__ import annotations

import signal
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codeyard.adapters.claude import ClaudeConfig, ClaudeSpec, ClaudeStreamParser
from codeyard.adapters.cli.agent import CliCodeAgent
from codeyard.adapters.cli.types import CliInvocation, ProviderSpec
from codeyard.adapters.process.local import LocalProcessLauncher
from codeyard.app.providers import ProviderContext, ProviderRegistry
from codeyard.domain.agent import AgentRequest
from codeyard.domain.errors import InvalidInput, UnsupportedProvider

HOME = PurePosixPath("/home/agent")
CONFIG = ClaudeConfig(binary="/opt/claude/bin/claude", api_key="sk-config-key", path="/opt/bin")


def _request(**fields: Any) -> AgentRequest:
    return AgentRequest(provider="claude", prompt=fields.pop("prompt", "do it"), **fields)


def _invocation(config: ClaudeConfig = CONFIG, **fields: Any) -> CliInvocation:
    return ClaudeSpec(config).invocation(_request(**fields), home=HOME)


def _option(argv: tuple[str, ...], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_it_is_a_provider_spec() -> None:
    spec: ProviderSpec = ClaudeSpec()
    assert spec.name == "claude"
    assert isinstance(spec.new_parser(_request()), ClaudeStreamParser)
    assert spec.new_parser(_request()) is not spec.new_parser(_request()), "fresh per run"


def test_default_argv_is_an_autonomous_streaming_turn() -> None:
    argv = _invocation().argv
    assert argv[0] == "/opt/claude/bin/claude"
    assert argv[1:5] == ("--print", "--output-format", "stream-json", "--verbose")
    assert "--include-partial-messages" in argv
    assert "--dangerously-skip-permissions" in argv
    assert "--permission-mode" not in argv
    assert "--allowedTools" not in argv
    assert argv[-2:] == ("--", "do it")
    for absent in ("--model", "--max-turns", "--append-system-prompt"):
        assert absent not in argv
    assert not any(a.startswith("--resume") for a in argv)


def test_request_options_map_to_flags() -> None:
    argv = _invocation(
        model="claude-sonnet-4-5",
        max_turns=3,
        instructions="Use pytest.",
        system_prompt_append="Be brief.",
        session_id="3af49e44-0e05-4669-84f0-4ea131591754",
    ).argv
    assert _option(argv, "--model") == "claude-sonnet-4-5"
    assert _option(argv, "--max-turns") == "3"
    assert _option(argv, "--append-system-prompt") == "Use pytest.\n\nBe brief."
    assert "--resume=3af49e44-0e05-4669-84f0-4ea131591754" in argv
    assert argv[-2:] == ("--", "do it"), "the prompt stays last, after --"


def test_config_model_is_the_default_and_the_request_wins() -> None:
    config = ClaudeConfig(model="claude-opus-4")
    assert _option(_invocation(config).argv, "--model") == "claude-opus-4"
    assert _option(_invocation(config, model="haiku").argv, "--model") == "haiku"


def test_allowed_commands_replace_the_bypass_with_an_allowlist() -> None:
    argv = _invocation(allowed_commands=("pytest", "git status")).argv
    assert "--dangerously-skip-permissions" not in argv
    assert _option(argv, "--permission-mode") == "acceptEdits"
    start = argv.index("--allowedTools") + 1
    assert argv[start : start + 2] == ("Bash(pytest:*)", "Bash(git status:*)")
    assert argv[start + 2 :] == ("--", "do it"), "the variadic list cannot swallow the prompt"


@pytest.mark.parametrize("command", ["", "  ", "rm (x)", "a,b", "two\nlines"])
def test_commands_that_would_break_a_rule_are_refused(command: str) -> None:
    with pytest.raises(InvalidInput):
        ClaudeSpec().check(_request(allowed_commands=(command,)))


def test_another_provider_is_refused() -> None:
    with pytest.raises(UnsupportedProvider):
        ClaudeSpec().check(AgentRequest(provider="codex", prompt="x"))


def test_a_blank_session_id_is_refused() -> None:
    with pytest.raises(InvalidInput):
        ClaudeSpec().check(_request(session_id=" "))


def test_environment_is_complete_and_private() -> None:
    env = _invocation(base_url="http://127.0.0.1:9999").env
    assert env["HOME"] == str(HOME)
    assert env["PATH"] == "/opt/bin"
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9999"
    assert env["ANTHROPIC_API_KEY"] == "sk-config-key"
    for switch in (
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "DISABLE_AUTOUPDATER",
        "DISABLE_TELEMETRY",
        "DISABLE_ERROR_REPORTING",
        "IS_SANDBOX",
    ):
        assert env[switch] == "1"
    assert "CLAUDE_CODE_MAX_RETRIES" not in env
    assert set(env) <= {
        "HOME",
        "PATH",
        "LANG",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        "DISABLE_AUTOUPDATER",
        "DISABLE_TELEMETRY",
        "DISABLE_ERROR_REPORTING",
        "IS_SANDBOX",
    }, "nothing inherited from the parent process"


def test_request_env_overrides_all_but_home() -> None:
    config = ClaudeConfig(
        base_url="http://config", max_retries=2, extra_env={"EXTRA": "1", "LANG": "C"}
    )
    invocation = _invocation(
        config, env={"ANTHROPIC_API_KEY": "sk-request", "HOME": "/elsewhere", "LANG": "de_DE"}
    )
    env = invocation.env
    assert env["HOME"] == str(HOME)
    assert env["ANTHROPIC_API_KEY"] == "sk-request"
    assert env["ANTHROPIC_BASE_URL"] == "http://config"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "2"
    assert env["EXTRA"] == "1"
    assert env["LANG"] == "de_DE"


def test_credentials_are_secrets() -> None:
    invocation = _invocation(
        env={"ANTHROPIC_AUTH_TOKEN": "tok-1", "GITHUB_TOKEN": "ghp-2", "GREETING": "plain"}
    )
    assert set(invocation.secrets) == {"sk-config-key", "tok-1", "ghp-2"}
    assert _invocation(ClaudeConfig()).secrets == ()


def test_cwd_is_the_request_workdir_else_the_configured_one() -> None:
    config = ClaudeConfig(workdir="/workspace")
    assert _invocation(config).cwd == "/workspace"
    assert _invocation(config, workdir="/tmp/w").cwd == "/tmp/w"
    assert _invocation().cwd is None


def test_interrupt_is_sigint_then_sigterm_then_sigkill() -> None:
    steps = _invocation().interrupt
    assert [s.signum for s in steps] == [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
    assert all(s.grace_s > 0 for s in steps)
    assert _invocation().files == {}


def test_capabilities_follow_the_config() -> None:
    caps = ClaudeSpec().capabilities()
    assert caps.resume
    assert caps.interrupt
    assert caps.reports_cost
    assert caps.max_turns
    assert caps.streaming_deltas
    quiet = ClaudeSpec(ClaudeConfig(partial_messages=False))
    assert not quiet.capabilities().streaming_deltas
    assert (
        "--include-partial-messages" not in _invocation(ClaudeConfig(partial_messages=False)).argv
    )


@given(prompt=st.text(min_size=1).filter(lambda s: s.strip() and "\x00" not in s))
def test_any_prompt_is_passed_whole_as_the_last_argument(prompt: str) -> None:
    argv = _invocation(prompt=prompt).argv
    assert argv[-2:] == ("--", prompt)


def test_the_registry_builds_a_claude_agent(tmp_path: Path) -> None:
    registry = ProviderRegistry.with_builtins()
    agent = registry.create("claude", ProviderContext(LocalProcessLauncher(), tmp_path))
    assert isinstance(agent, CliCodeAgent)
    assert agent.provider == "claude"
    assert agent.capabilities() == ClaudeSpec().capabilities()
