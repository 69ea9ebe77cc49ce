"""The CodeAgent a ``codeyard worker`` process runs: a provider spec with the worker's options.

The provider registry builds specs with their defaults (binary on PATH, no key, the
vendor's API). A worker needs to say where the CLI is and which model API it talks to, so
for the CLI providers whose options are a dataclass with ``binary``, ``base_url`` and
``api_key`` (claude, droid, codex, gemini) those three are set from :class:`AgentOptions`.
Other providers (opencode, plugins) come from the registry unchanged and refuse options
they cannot take, rather than ignoring them.

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


@dataclass(frozen=True)
class AgentOptions:
    """Where the CLI is and which model API it uses; ``None`` keeps the spec's default."""

    binary: str | None = None
    base_url: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)

    def overrides(self) -> dict[str, str]:
        return {
            name: value
            for name, value in (
                ("binary", self.binary),
                ("base_url", self.base_url),
                ("api_key", self.api_key),
            )
            if value is not None
        }


def build_agent(provider: str, options: AgentOptions, *, home: Path) -> CodeAgent:
    """A CodeAgent for ``provider`` running its CLI locally with ``home`` as HOME."""
    home.mkdir(parents=True, exist_ok=True)
    overrides = options.overrides()
    configurable = _CONFIGURABLE.get(provider)
    if configurable is None:
        if overrides:
            raise InvalidInput(
                "agent binary/base URL/API key options are not supported for this provider",
                provider=provider,
                supported=sorted(_CONFIGURABLE),
            )
        context = ProviderContext(launcher=LocalProcessLauncher(), home=home)
        return ProviderRegistry.with_builtins().create(provider, context)
    module_name, spec_name, options_name = configurable
    module: Any = importlib.import_module(module_name)
    spec = getattr(module, spec_name)(getattr(module, options_name)(**overrides))
    return CliCodeAgent(spec, LocalProcessLauncher(), home)
