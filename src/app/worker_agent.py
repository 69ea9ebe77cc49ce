"""The CodeAgent a ``codeyard worker`` process runs: a provider with the worker's options.

The provider registry builds agents with their defaults (binary on PATH, no key, the
vendor's API). A worker needs to say where the CLI is and which model API it talks to, so
for every built-in provider (claude, droid, codex, gemini, opencode, opencode-run) the
:class:`AgentOptions` ``binary``, ``base_url``, ``api_key``, ``path`` and ``model`` are set on the
adapter's options. Other providers (plugins) come from the registry unchanged and refuse
options they cannot take, rather than ignoring them.

**One base URL for every provider** (issue #7: ``--base-url URL`` must work the same for
all five): ``base_url`` is the endpoint's root, as for Anthropic's API. Each adapter is
given it in the form its CLI expects: claude, gemini and droid (Anthropic wire) take the
root as is (their SDKs append ``/v1/messages``, ``/v1beta/models/...``); codex expects the
OpenAI root INCLUDING ``/v1`` (it appends ``/responses``), so a URL without a path gets
``/v1`` (a URL with a path is taken as the full root); opencode does the same itself.

**A model for a custom endpoint.** ``model`` is the name sent to the endpoint. Left unset
with a ``base_url``, codex, gemini and droid get :data:`ENDPOINT_MODELS` instead of their
CLI's own default, which does not work against a compatible endpoint (measured with the
pinned CLIs against the scripted model server): codex 0.169's default model
(``gpt-6.1-sol``) is sent WITHOUT any tool, so the agent could only chat; gemini 0.61's
default ``auto`` first asks a classifier model (``gemini-3.5-flash-lite``) to route the
prompt and never started the turn when that answer was not the classifier's JSON; droid
refuses a custom model without a name. Claude Code and OpenCode keep their defaults.

``path`` (the CLI's ``PATH``) is how a worker's ``allowed_commands`` shim reaches the
agent (see :mod:`codeyard.app.command_shim`); plugins get it through the request env.

The CLI runs as a local subprocess of the worker (inside the worker container in
production), with ``home`` as its private HOME: sessions live there, so multi-turn resume
needs the same home for the worker's whole life.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from codeyard.adapters.cli.agent import CliCodeAgent
from codeyard.adapters.process.local import LocalProcessLauncher
from codeyard.app.providers import ProviderContext, ProviderRegistry
from codeyard.domain.errors import InvalidInput
from codeyard.ports.code_agent import CodeAgent
from codeyard.ports.process_launcher import ProcessLauncher

#: Providers whose adapter enforces ``AgentRequest.allowed_commands`` itself (the others
#: refuse a request carrying it): claude ``--allowedTools``, droid ``commandAllowlist``,
#: opencode session permission rules.
NATIVE_ALLOWLIST: frozenset[str] = frozenset({"claude", "droid", "opencode"})

#: The model a provider pointed at a custom endpoint uses when none is set (module doc);
#: a request's ``model`` still wins. Droid's is an Anthropic name: it speaks that wire API.
ENDPOINT_MODELS: dict[str, str] = {
    "codex": "gpt-5-codex",
    "gemini": "gemini-2.5-pro",
    "droid": "claude-sonnet-4-5",
}


@dataclass(frozen=True)
class AgentOptions:
    """Where the CLI is and which model API it uses; ``None`` keeps the adapter's default."""

    binary: str | None = None
    #: The model endpoint's root URL (see the module docstring).
    base_url: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    #: The CLI's whole ``PATH`` (a command shim); ``None`` keeps the adapter's default.
    path: str | None = None
    #: The model name sent to the endpoint; ``None``: see :data:`ENDPOINT_MODELS`.
    model: str | None = None

    def overrides(self) -> dict[str, str]:
        return {
            name: value
            for name, value in (
                ("binary", self.binary),
                ("base_url", self.base_url),
                ("api_key", self.api_key),
                ("path", self.path),
                ("model", self.model),
            )
            if value is not None
        }


def with_v1(url: str) -> str:
    """``url`` with the path ``/v1`` when it has none (an OpenAI-style API root)."""
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/v1")
    return urlunsplit(parts)


# The adapters are imported by the builder that needs them (``_load``): a worker runs one
# provider and should not pay for importing the others.
Overrides = dict[str, Any]


def _adapter(module: str) -> Any:
    return importlib.import_module(f"codeyard.adapters.{module}")


def _cli(spec: Any, home: Path, launcher: ProcessLauncher) -> CodeAgent:
    return CliCodeAgent(spec, launcher, home)


def _claude(o: Overrides, home: Path, launcher: ProcessLauncher) -> CodeAgent:
    m = _adapter("claude.spec")
    return _cli(m.ClaudeSpec(m.ClaudeConfig(**o)), home, launcher)


def _codex(o: Overrides, home: Path, launcher: ProcessLauncher) -> CodeAgent:
    m = _adapter("codex.spec")
    if "base_url" in o:
        o = {**o, "base_url": with_v1(o["base_url"])}
    return _cli(m.CodexSpec(m.CodexOptions(**o)), home, launcher)


def _gemini(o: Overrides, home: Path, launcher: ProcessLauncher) -> CodeAgent:
    m = _adapter("gemini.spec")
    return _cli(m.GeminiSpec(m.GeminiOptions(**o)), home, launcher)


def _droid(o: Overrides, home: Path, launcher: ProcessLauncher) -> CodeAgent:
    m = _adapter("droid.spec")
    return _cli(m.DroidSpec(m.DroidOptions(**o)), home, launcher)


def _opencode(o: Overrides, home: Path, launcher: ProcessLauncher) -> CodeAgent:
    config = _adapter("opencode.config").OpencodeConfig(**o)
    agent: CodeAgent = _adapter("opencode.agent").OpencodeCodeAgent(launcher, home, config=config)
    return agent


def _opencode_run(o: Overrides, home: Path, launcher: ProcessLauncher) -> CodeAgent:
    config = _adapter("opencode.config").OpencodeConfig(**o)
    m = _adapter("opencode.run_spec")
    return _cli(m.OpencodeRunSpec(m.OpencodeRunOptions(config=config)), home, launcher)


#: provider -> (the adapter's default executable, builder from the overrides and HOME).
#: The defaults are the adapters' own (tests/unit/test_worker_agent.py checks they agree).
_BUILDERS: dict[str, tuple[str, Callable[[Overrides, Path, ProcessLauncher], CodeAgent]]] = {
    "claude": ("claude", _claude),
    "droid": ("droid", _droid),
    "codex": ("codex", _codex),
    "gemini": ("gemini", _gemini),
    "opencode": ("opencode", _opencode),
    "opencode-run": ("opencode", _opencode_run),
}


def takes_options(provider: str) -> bool:
    """True when :func:`build_agent` can apply :class:`AgentOptions` to ``provider``."""
    return provider in _BUILDERS


def agent_executable(provider: str, options: AgentOptions) -> str | None:
    """The executable the agent for ``provider`` runs (``options.binary`` or the adapter's
    default name), ``None`` for a provider this module does not know."""
    if options.binary is not None:
        return options.binary
    known = _BUILDERS.get(provider)
    return known[0] if known is not None else None


def build_agent(
    provider: str,
    options: AgentOptions,
    *,
    home: Path,
    launcher: ProcessLauncher | None = None,
) -> CodeAgent:
    """A CodeAgent for ``provider`` running its CLI with ``home`` as HOME, through
    ``launcher`` (default: local subprocesses).

    Raises ``InvalidInput`` for options on a provider that cannot take them (plugins),
    ``UnsupportedProvider`` for an unknown provider.
    """
    home.mkdir(parents=True, exist_ok=True)
    overrides: Overrides = dict(options.overrides())
    launcher = launcher or LocalProcessLauncher()
    known = _BUILDERS.get(provider)
    if known is not None:
        if "base_url" in overrides and provider in ENDPOINT_MODELS:
            overrides.setdefault("model", ENDPOINT_MODELS[provider])
        return known[1](overrides, home, launcher)
    if overrides:
        raise InvalidInput(
            "agent binary/base URL/API key/PATH/model options are not supported for this provider",
            provider=provider,
            supported=sorted(_BUILDERS),
        )
    context = ProviderContext(launcher=launcher, home=home)
    return ProviderRegistry.with_builtins().create(provider, context)
