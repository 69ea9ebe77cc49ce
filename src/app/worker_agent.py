"""The CodeAgent a ``codeyard worker`` process runs: a provider spec with the worker's options.

The provider registry builds specs with their defaults (binary on PATH, no key, the
vendor's API). A worker needs to say where the CLI is and which model API it talks to, so
for the CLI providers whose options are a dataclass with ``binary``, ``base_url`` and
``api_key`` (claude, droid, codex, gemini) those three are set from :class:`AgentOptions`.
Other providers (opencode, plugins) come from the registry unchanged and refuse options
they cannot take, rather than ignoring them.

``path`` (the CLI's ``PATH``) is how a worker's ``allowed_commands`` shim reaches the
specs that take options (see :mod:`codeyard.app.command_shim`); the others get it through
the request env.

The CLI runs as a local subprocess of the worker (inside the worker container in
production), with ``home`` as its private HOME: sessions live there, so multi-turn resume
needs the same home for the worker's whole life.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codeyard.adapters.cli.agent import CliCodeAgent
from codeyard.adapters.process.local import LocalProcessLauncher
from codeyard.app.providers import ProviderContext, ProviderRegistry
from codeyard.domain.errors import InvalidInput
from codeyard.ports.code_agent import CodeAgent

#: provider -> (module, spec class, options class): the specs configurable by AgentOptions.
_CONFIGURABLE: dict[str, tuple[str, str, str]] = {
    "claude": ("codeyard.adapters.claude.spec", "ClaudeSpec", "ClaudeConfig"),
    "droid": ("codeyard.adapters.droid.spec", "DroidSpec", "DroidOptions"),
    "codex": ("codeyard.adapters.codex.spec", "CodexSpec", "CodexOptions"),
    "gemini": ("codeyard.adapters.gemini.spec", "GeminiSpec", "GeminiOptions"),
}


#: Providers whose adapter enforces ``AgentRequest.allowed_commands`` itself (the others
#: refuse a request carrying it): claude ``--allowedTools``, droid ``commandAllowlist``,
#: opencode session permission rules.
NATIVE_ALLOWLIST: frozenset[str] = frozenset({"claude", "droid", "opencode"})

#: The executable of the providers the registry builds (not configurable here).
_REGISTRY_BINARIES: dict[str, str] = {"opencode": "opencode", "opencode-run": "opencode"}


@dataclass(frozen=True)
class AgentOptions:
    """Where the CLI is and which model API it uses; ``None`` keeps the spec's default."""

    binary: str | None = None
    base_url: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    #: The CLI's whole ``PATH`` (a command shim); ``None`` keeps the spec's default.
    path: str | None = None

    def overrides(self) -> dict[str, str]:
        return {
            name: value
            for name, value in (
                ("binary", self.binary),
                ("base_url", self.base_url),
                ("api_key", self.api_key),
                ("path", self.path),
            )
            if value is not None
        }


def takes_options(provider: str) -> bool:
    """True when :func:`build_agent` can apply :class:`AgentOptions` to ``provider``."""
    return provider in _CONFIGURABLE


def agent_executable(provider: str, options: AgentOptions) -> str | None:
    """The executable the agent for ``provider`` runs (``options.binary`` or the spec's
    default name), ``None`` for a provider this module does not know."""
    if options.binary is not None:
        return options.binary
    configurable = _CONFIGURABLE.get(provider)
    if configurable is None:
        return _REGISTRY_BINARIES.get(provider)
    module_name, _, options_name = configurable
    module: Any = importlib.import_module(module_name)
    default: object = getattr(module, options_name)().binary
    return default if isinstance(default, str) else None


def build_agent(provider: str, options: AgentOptions, *, home: Path) -> CodeAgent:
    """A CodeAgent for ``provider`` running its CLI locally with ``home`` as HOME."""
    home.mkdir(parents=True, exist_ok=True)
    overrides = options.overrides()
    configurable = _CONFIGURABLE.get(provider)
    if configurable is None:
        if overrides:
            raise InvalidInput(
                "agent binary/base URL/API key/PATH options are not supported for this provider",
                provider=provider,
                supported=sorted(_CONFIGURABLE),
            )
        context = ProviderContext(launcher=LocalProcessLauncher(), home=home)
        return ProviderRegistry.with_builtins().create(provider, context)
    module_name, spec_name, options_name = configurable
    module: Any = importlib.import_module(module_name)
    spec = getattr(module, spec_name)(getattr(module, options_name)(**overrides))
    return CliCodeAgent(spec, LocalProcessLauncher(), home)
