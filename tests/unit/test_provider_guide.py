"""docs/providers.md keeps working: its python blocks are the files of a real provider.

Every ```python block of the guide starts with ``# file: <path>``. The blocks are written
to a temporary folder (the ``linechat_provider`` package to a "site" folder, the test
files to a "checkout" one), imported and run: a turn through ``CliCodeAgent`` with
``LocalProcessLauncher`` against the guide's stand-in CLI and the scripted model server,
the entry point the guide's TOML declares, and the guide's contract-suite module in a
pytest subprocess.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from codeyard.adapters.cli import CliCodeAgent, Parsed
from codeyard.adapters.process import LocalProcessLauncher
from codeyard.app.providers import ProviderContext, ProviderRegistry
from codeyard.domain.agent import AgentRequest, ResultStatus
from codeyard.domain.errors import InvalidRequest
from codeyard.domain.events import AgentEvent
from codeyard.testing.model_server import ModelServer, Scenario

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "providers.md"
PACKAGE = "linechat_provider"
KEY = "lc-test-key-5e2b"
#: The contract module runs as it would in a checkout, with the repo's conftest.
PYTEST = (sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest")
FILE_HEADER = re.compile(r"# file: (\S+)\n")


def guide_files() -> dict[str, str]:
    """path -> content of every python block (all of them must name their file)."""
    blocks = re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    files: dict[str, str] = {}
    for block in blocks:
        header = FILE_HEADER.match(block)
        assert header, f"a python block of the guide names no file: {block[:80]!r}"
        files[header.group(1)] = block
    return files


def guide_entry_points() -> dict[str, str]:
    blocks = re.findall(r"```toml\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    assert len(blocks) == 1
    group: dict[str, str] = tomllib.loads(blocks[0])["project"]["entry-points"][
        "codeyard.providers"
    ]
    return group


@pytest.fixture
def written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The guide's files under ``tmp_path``; the package importable from ``site``."""
    for name, content in guide_files().items():
        root = tmp_path / ("site" if name.startswith(PACKAGE + "/") else "checkout")
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    yield tmp_path
    for module in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[module]


def guide_package() -> Any:
    """The guide's ``linechat_provider`` (importable once ``written`` ran)."""
    return importlib.import_module(PACKAGE)


def stand_in(root: Path) -> Path:
    return root / "checkout" / "tests" / "contract" / "fake_linechat.py"


async def run(agent: CliCodeAgent, request: AgentRequest) -> list[AgentEvent]:
    with anyio.fail_after(30):
        async with contextlib.aclosing(agent.execute(request)) as events:
            return [event async for event in events]


def test_every_block_names_its_file_and_the_package_is_complete() -> None:
    files = guide_files()
    assert {f"{PACKAGE}/__init__.py", f"{PACKAGE}/parser.py", f"{PACKAGE}/spec.py"} <= set(files)
    assert "tests/contract/fake_linechat.py" in files
    assert "tests/contract/test_linechat.py" in files
    assert guide_entry_points() == {"linechat": f"{PACKAGE}:LinechatSpec"}


@pytest.mark.anyio
async def test_the_example_runs_through_cli_code_agent(written: Path) -> None:
    lc = guide_package()
    async with ModelServer(Scenario.text("Added the README.")) as server:
        options = lc.LinechatOptions(
            command=(sys.executable, str(stand_in(written))),
            api_key=KEY,
            base_url=server.base_url,
        )
        agent = CliCodeAgent(lc.LinechatSpec(options), LocalProcessLauncher(), written / "home")
        request = AgentRequest(provider="linechat", prompt="add a README")
        events = await run(agent, request)
        assert len(server.model_requests()) == 1

    kinds = [event.payload.type for event in events]
    assert kinds[-1] == "result"
    assert kinds.count("result") == 1
    assert {"init", "message", "usage", "stderr"} <= set(kinds)
    assert [event.seq for event in events] == list(range(len(events)))
    final = events[-1].payload
    assert final.type == "result"
    assert final.result.status is ResultStatus.SUCCESS, final.result
    assert final.result.text == "Added the README."
    assert (final.result.session_id or "").startswith("lc-")
    assert final.result.usage.output_tokens > 0
    # The stand-in prints the key on stderr: the secret is redacted everywhere.
    dumped = [event.model_dump_json() for event in events]
    assert not any(KEY in text for text in dumped)
    assert any("[REDACTED]" in text for text in dumped)
    # The generated config went to the run's private HOME.
    assert (written / "home" / ".linechat" / "config.json").is_file()


@pytest.mark.anyio
async def test_the_example_refuses_what_it_cannot_do_before_any_event(written: Path) -> None:
    lc = guide_package()
    agent = CliCodeAgent(
        lc.LinechatSpec(lc.LinechatOptions(api_key="")), LocalProcessLauncher(), written / "home"
    )
    for request in (
        AgentRequest(provider="linechat", prompt="hi"),  # no API key anywhere
        AgentRequest(provider="linechat", prompt="hi", max_turns=3, env={"LINECHAT_API_KEY": "k"}),
    ):
        with pytest.raises(InvalidRequest):
            await run(agent, request)


def test_the_example_parser_never_raises(written: Path) -> None:
    parser = guide_package().LinechatParser()
    for line in ("not json", "[1, 2]", '{"kind": "usage", "input": -1, "output": 2}', "{}"):
        parsed: list[Parsed] = parser.feed(line)
        assert [(p.payload.type, p.raw) for p in parsed] == [("raw", line)]


@pytest.mark.anyio
async def test_the_guides_entry_point_registers_the_example(
    written: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = written / "site"
    dist_info = site / "linechat_provider-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: linechat-provider\nVersion: 0.1\n"
    )
    lines = [f"{name} = {target}" for name, target in guide_entry_points().items()]
    (dist_info / "entry_points.txt").write_text("[codeyard.providers]\n" + "\n".join(lines) + "\n")
    # The registry builds LinechatSpec() with no arguments: its options read the environment.
    monkeypatch.setenv("LINECHAT_API_KEY", KEY)
    registry = ProviderRegistry.with_builtins()
    assert registry.load_entry_points() == []
    async with ModelServer(Scenario.text("Done.")) as server:
        monkeypatch.setenv("LINECHAT_BASE_URL", server.base_url)
        context = ProviderContext(launcher=LocalProcessLauncher(), home=written / "home")
        agent = registry.create("linechat", context)
        assert isinstance(agent, CliCodeAgent)
        # The CLI on the spec's PATH is the stand-in, run by this interpreter.
        bin_dir = written / "bin"
        bin_dir.mkdir()
        executable = bin_dir / "linechat"
        executable.write_text(f"#!{sys.executable}\n" + stand_in(written).read_text())
        executable.chmod(0o755)
        request = AgentRequest(
            provider="linechat", prompt="go", env={"PATH": f"{bin_dir}:/usr/bin:/bin"}
        )
        events = await run(agent, request)
    final = events[-1].payload
    assert final.type == "result"
    assert final.result.status is ResultStatus.SUCCESS, final.result
    assert final.result.text == "Done."


@pytest.mark.slow
def test_the_guides_contract_module_passes_the_shared_suite(written: Path) -> None:
    module = written / "checkout" / "tests" / "contract" / "test_linechat.py"
    env = {**os.environ, "PYTHONPATH": str(written / "site")}
    done = subprocess.run(
        [*PYTEST, str(module), "-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed, summary
    assert int(passed.group(1)) >= 10, summary
    assert "failed" not in summary, summary
    assert "skipped" not in summary, summary
