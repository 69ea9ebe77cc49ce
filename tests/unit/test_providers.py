"""codeyard.app.providers: the provider registry and its entry-point plugins."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeyard.adapters.cli import CliCodeAgent
from codeyard.adapters.memory import ScriptedCodeAgent
from codeyard.adapters.process import LocalProcessLauncher
from codeyard.app.providers import BUILTINS, ProviderContext, ProviderRegistry
from codeyard.domain.agent import AgentRequest, ResultStatus
from codeyard.domain.errors import (
    AlreadyExists,
    InvalidName,
    ProviderLoadFailed,
    UnsupportedProvider,
)
from codeyard.domain.events import AgentEvent
from codeyard.ports.code_agent import CodeAgent
from tests.fixtures.fake_provider import FakeSpec

PLUGIN_MODULE = "codeyard_test_plugin"


@pytest.fixture
def context(tmp_path: Path) -> ProviderContext:
    return ProviderContext(launcher=LocalProcessLauncher(), home=tmp_path / "home")


async def run(agent: object, prompt: str = "hello") -> list[AgentEvent]:
    assert isinstance(agent, ScriptedCodeAgent | CliCodeAgent)
    request = AgentRequest(provider=agent.provider, prompt=prompt)
    async with contextlib.aclosing(agent.execute(request)) as events:
        return [event async for event in events]


class NamedScripted(ScriptedCodeAgent):
    def __init__(self) -> None:
        super().__init__(provider="named")


def test_first_registered_is_the_default_and_names_keep_order() -> None:
    registry = ProviderRegistry()
    with pytest.raises(UnsupportedProvider):
        registry.default()
    registry.register("beta", NamedScripted)
    registry.register("alpha", NamedScripted)
    assert registry.default() == "beta"
    assert registry.names() == ("beta", "alpha")


def test_builtins_are_registered_lazily_without_importing_them() -> None:
    # In a fresh interpreter: dropping modules from this one's sys.modules would give
    # other tests a second copy of their classes.
    probe = (
        "import sys; from codeyard.app.providers import BUILTINS, ProviderRegistry; "
        "r = ProviderRegistry.with_builtins(); "
        "print(','.join(r.names()), r.default()); "
        "print(sorted(p.partition(':')[0] for p in BUILTINS.values() "
        "if p.partition(':')[0] in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.splitlines() == [
        "claude,droid,opencode,codex,gemini,opencode-run claude",
        "[]",
    ]


@pytest.mark.parametrize("name", list(BUILTINS))
def test_every_builtin_builds_its_agent(name: str, context: ProviderContext) -> None:
    agent = ProviderRegistry.with_builtins().create(name, context)
    assert isinstance(agent, CodeAgent)
    assert agent.provider == name
    if name != "opencode":  # `opencode serve` is driven by a CodeAgent of its own
        assert isinstance(agent, CliCodeAgent)
        assert agent.home == context.home


def test_duplicate_and_bad_names() -> None:
    registry = ProviderRegistry()
    registry.register("named", NamedScripted)
    with pytest.raises(AlreadyExists):
        registry.register("named", NamedScripted)
    registry.register("named", NamedScripted, replace=True)
    for bad in ("", "Claude", "has space", "semi;colon"):
        with pytest.raises(InvalidName):
            registry.register(bad, NamedScripted)


def test_unknown_provider(context: ProviderContext) -> None:
    with pytest.raises(UnsupportedProvider) as info:
        ProviderRegistry().create("nope", context)
    assert not isinstance(info.value, ProviderLoadFailed)


@pytest.mark.anyio
async def test_a_spec_factory_is_wrapped_into_a_cli_agent(context: ProviderContext) -> None:
    registry = ProviderRegistry()
    registry.register("fake", lambda ctx: FakeSpec(steps=[{"out": '{"type": "result"}'}]))
    agent = registry.create("fake", context)
    assert isinstance(agent, CliCodeAgent)
    events = await run(agent)
    assert events[-1].payload.type == "result"
    assert events[-1].payload.result.status is ResultStatus.SUCCESS


def test_bad_targets_are_typed_errors_naming_the_provider(context: ProviderContext) -> None:
    registry = ProviderRegistry()
    registry.register("missing", "codeyard_no_such_module:Thing")
    registry.register("notcallable", "codeyard.app.providers:ENTRY_POINT_GROUP")
    registry.register("wrongname", ScriptedCodeAgent)  # its provider is "scripted"
    registry.register("neither", lambda ctx: 42)
    for name in ("missing", "notcallable", "wrongname", "neither"):
        with pytest.raises(ProviderLoadFailed) as info:
            registry.create(name, context)
        assert info.value.fields["entry_point"].startswith(f"{name} = ")


def test_concurrent_registration_is_safe() -> None:
    registry = ProviderRegistry()
    errors: list[Exception] = []

    def worker(i: int) -> None:
        try:
            for j in range(50):
                registry.register(f"p{i}-{j}", NamedScripted)
                registry.names()
        except Exception as exc:  # pragma: no cover - a failure is what we look for
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(registry.names()) == 400


# --- plugins through entry points -------------------------------------------------------


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution ``codeyard-test-plugin`` importlib.metadata sees as installed."""
    site = tmp_path / "site"
    package = site / PLUGIN_MODULE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from codeyard.adapters.memory import ScriptedCodeAgent\n\n\n"
        "class PluginAgent(ScriptedCodeAgent):\n"
        "    def __init__(self) -> None:\n"
        '        super().__init__(provider="testplugin")\n'
    )
    dist_info = site / f"{PLUGIN_MODULE}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: codeyard-test-plugin\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[codeyard.providers]\n"
        f"testplugin = {PLUGIN_MODULE}:PluginAgent\n"
        f"brokenplugin = {PLUGIN_MODULE}:NoSuchAgent\n"
        "Bad Name = codeyard_no_such_module:X\n"
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, PLUGIN_MODULE, raising=False)
    yield site
    sys.modules.pop(PLUGIN_MODULE, None)


@pytest.mark.anyio
async def test_a_plugin_registered_by_entry_point_loads_and_runs(
    installed_plugin: Path, context: ProviderContext
) -> None:
    registry = ProviderRegistry.with_builtins()
    failures = registry.load_entry_points()
    assert "testplugin" in registry.names()
    assert registry.default() == "claude"  # plugins come after the built-ins
    agent = registry.create("testplugin", context)
    assert type(agent).__name__ == "PluginAgent"
    events = await run(agent)
    assert events[-1].payload.type == "result"
    assert events[-1].payload.result.status is ResultStatus.SUCCESS
    assert events[-1].provider == "testplugin"
    # The two bad entries are reported, by entry point, without hiding the good one.
    named = sorted(f.fields.get("entry_point", "") for f in failures)
    assert named == [
        "Bad Name = codeyard_no_such_module:X",
        f"brokenplugin = {PLUGIN_MODULE}:NoSuchAgent",
    ]
    assert all(isinstance(f, ProviderLoadFailed) for f in failures)


def test_a_plugin_cannot_take_a_builtin_name(installed_plugin: Path) -> None:
    (installed_plugin / f"{PLUGIN_MODULE}-0.1.dist-info" / "entry_points.txt").write_text(
        f"[codeyard.providers]\nclaude = {PLUGIN_MODULE}:PluginAgent\n"
    )
    registry = ProviderRegistry.with_builtins()
    failures = registry.load_entry_points()
    assert [f.fields["entry_point"] for f in failures] == [f"claude = {PLUGIN_MODULE}:PluginAgent"]
    assert registry.names().count("claude") == 1
