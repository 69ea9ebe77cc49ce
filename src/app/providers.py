"""The provider registry: which CodeAgent serves which ``request.provider`` name.

A provider is registered under a lowercase name with a *target*, given directly or as a
lazy import path ``"package.module:attribute"`` (imported on first use, so registering the
built-ins imports none of them). :meth:`ProviderRegistry.create` turns a target into a
``CodeAgent`` for a :class:`ProviderContext` (the launcher to run the CLI with and its
HOME):

* a class is instantiated without arguments; any other callable is called with the
  context;
* the result is used as is when it is a ``CodeAgent`` (has ``execute``), or wrapped in a
  :class:`~codeyard.adapters.cli.agent.CliCodeAgent` when it is a ``ProviderSpec`` (has
  ``invocation`` and ``new_parser``);
* the agent's ``provider`` must equal the registered name.

Third-party providers register through the entry-point group ``codeyard.providers``
(``my-agent = my_package.spec:MySpec`` in their packaging metadata);
:meth:`ProviderRegistry.load_entry_points` registers them and returns, rather than raises,
one ``ProviderLoadFailed`` per bad plugin, so one broken plugin does not hide the others.

The first provider registered is the default. The registry is thread-safe.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from codeyard.adapters.cli.agent import CliCodeAgent
from codeyard.domain.agent import AgentProvider, ProviderName
from codeyard.domain.errors import (
    AlreadyExists,
    InvalidName,
    ProviderLoadFailed,
    UnsupportedProvider,
)
from codeyard.ports.code_agent import CodeAgent
from codeyard.ports.process_launcher import ProcessLauncher

ENTRY_POINT_GROUP = "codeyard.providers"

#: The built-in providers, in default order (the first is the default).
BUILTINS: dict[str, str] = {
    AgentProvider.CLAUDE: "codeyard.adapters.claude:ClaudeSpec",
    AgentProvider.DROID: "codeyard.adapters.droid:DroidSpec",
    AgentProvider.OPENCODE: "codeyard.adapters.opencode:opencode_agent",
    AgentProvider.CODEX: "codeyard.adapters.codex:CodexSpec",
    AgentProvider.GEMINI: "codeyard.adapters.gemini:GeminiSpec",
    # The same CLI as "opencode", one `opencode run --format json` process per turn.
    "opencode-run": "codeyard.adapters.opencode.run_spec:OpencodeRunSpec",
}


@dataclass(frozen=True)
class ProviderContext:
    """What a provider needs to build its agent: where to run the CLI, its HOME."""

    launcher: ProcessLauncher
    home: Path


#: A provider target: a class, a factory ``(ProviderContext) -> agent or spec``, or the
#: lazy import path of one.
ProviderTarget = Callable[..., Any] | str


_NAME = TypeAdapter(ProviderName)


def _check_name(name: str) -> str:
    try:
        return _NAME.validate_python(name)
    except ValidationError as exc:
        raise InvalidName("provider must be a lowercase name like 'claude'", value=name) from exc


def _import(path: str, *, entry_point: str) -> Any:
    module_name, _, attribute = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split(".") if attribute else ():
            obj = getattr(obj, part)
    except Exception as exc:
        raise ProviderLoadFailed(
            "cannot load provider", entry_point=entry_point, target=path, detail=repr(exc)
        ) from exc
    return obj


class ProviderRegistry:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._targets: dict[str, ProviderTarget] = {}
        #: How each name was registered, for error messages ("claude = codeyard...:X").
        self._sources: dict[str, str] = {}

    @classmethod
    def with_builtins(cls) -> ProviderRegistry:
        """A registry with the built-in providers (lazily), ``claude`` first."""
        registry = cls()
        for name, path in BUILTINS.items():
            registry.register(name, path)
        return registry

    def register(self, name: str, target: ProviderTarget, *, replace: bool = False) -> None:
        """Register ``target`` under ``name``; ``AlreadyExists`` if taken (unless
        ``replace``), ``InvalidName`` for a name requests could not use."""
        name = _check_name(name)
        source = target if isinstance(target, str) else getattr(target, "__qualname__", "?")
        with self._lock:
            if name in self._targets and not replace:
                raise AlreadyExists(
                    "a provider with this name is registered",
                    name=name,
                    registered=self._sources[name],
                )
            self._targets[name] = target
            self._sources[name] = f"{name} = {source}"

    def names(self) -> tuple[str, ...]:
        """Registered names, in registration order."""
        with self._lock:
            return tuple(self._targets)

    def default(self) -> str:
        """The name of the first registered provider."""
        with self._lock:
            if not self._targets:
                raise UnsupportedProvider("no provider is registered")
            return next(iter(self._targets))

    def get(self, name: str) -> Callable[..., Any]:
        """The resolved target of ``name`` (imported on first use, then cached)."""
        with self._lock:
            target = self._targets.get(name)
            source = self._sources.get(name, name)
        if target is None:
            raise UnsupportedProvider(
                "no such provider", requested=name, known=sorted(self.names())
            )
        if not isinstance(target, str):
            return target
        resolved: Callable[..., Any] = _import(target, entry_point=source)
        if not callable(resolved):
            raise ProviderLoadFailed("provider target is not callable", entry_point=source)
        with self._lock:
            if self._targets.get(name) == target:
                self._targets[name] = resolved
        return resolved

    def create(self, name: str, context: ProviderContext) -> CodeAgent:
        """A ``CodeAgent`` for ``name`` (see the module docstring for the rules)."""
        target = self.get(name)
        with self._lock:
            source = self._sources.get(name, name)
        try:
            made = target() if isinstance(target, type) else target(context)
        except Exception as exc:
            raise ProviderLoadFailed(
                "provider failed to build", entry_point=source, detail=repr(exc)
            ) from exc
        agent: Any
        if hasattr(made, "execute"):
            agent = made
        elif hasattr(made, "invocation") and hasattr(made, "new_parser"):
            agent = CliCodeAgent(made, context.launcher, context.home)
        else:
            raise ProviderLoadFailed(
                "provider built neither a CodeAgent nor a ProviderSpec",
                entry_point=source,
                built=type(made).__name__,
            )
        if not isinstance(agent, CodeAgent) or agent.provider != name:
            raise ProviderLoadFailed(
                "provider built an agent for another name",
                entry_point=source,
                provider=getattr(agent, "provider", None),
            )
        return agent

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[ProviderLoadFailed]:
        """Register every entry point of ``group``; the failures, one per bad plugin."""
        failures: list[ProviderLoadFailed] = []
        for entry in importlib.metadata.entry_points(group=group):
            label = f"{entry.name} = {entry.value}"
            try:
                target = entry.load()
                self.register(entry.name, target)
            except ProviderLoadFailed as exc:
                failures.append(exc)
            except Exception as exc:
                error = ProviderLoadFailed(
                    "cannot load provider plugin", entry_point=label, detail=repr(exc)
                )
                error.__cause__ = exc
                failures.append(error)
            else:
                with self._lock:
                    self._sources[entry.name] = label
        return failures
