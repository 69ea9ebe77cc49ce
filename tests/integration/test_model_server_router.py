"""The Router with the REAL Claude Code CLI: two runs at the same time against one model
server, each following the script its prompt's marker names, then a resumed later round
of one of them continuing its own script."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from codeyard.domain.agent import AgentRequest
from codeyard.domain.events import AgentEvent
from codeyard.testing.model_server import ModelServer, Router, Scenario, Text
from codeyard.testing.model_server.tools import TOOLS
from tests.integration.claude_support import ClaudeHarness, need_claude
from tests.integration.cli_support import final_result

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

TOOL = TOOLS["claude"]


@pytest.fixture(autouse=True)
def _claude_installed() -> None:
    need_claude()


def _developer(name: str, workdir: Path) -> Scenario:
    """Round 1: write ``<name>.txt`` then report; round 2 (after a resume): answer the
    feedback."""
    return Scenario(
        turns=[
            [TOOL.write_file(str(workdir / f"{name}.txt"), f"from {name}\n")],
            [Text(f"{name}: wrote {name}.txt")],
            [Text(f"{name}: round 2 done")],
        ]
    )


async def test_two_concurrent_runs_follow_their_own_scripts(tmp_path: Path) -> None:
    work_a, work_b = tmp_path / "a" / "work", tmp_path / "b" / "work"
    for work in (work_a, work_b):
        work.mkdir(parents=True)
    router = Router(
        {"[task:a]": _developer("a", work_a), "[task:b]": _developer("b", work_b)},
        default=Scenario.text("unrouted"),
    )
    async with ModelServer(router) as server:
        harness = {
            "a": ClaudeHarness(server, tmp_path / "a"),
            "b": ClaudeHarness(server, tmp_path / "b"),
        }
        requests = {
            name: h.request(f"[task:{name}] write {name}.txt") for name, h in harness.items()
        }
        events: dict[str, list[AgentEvent]] = {}

        async def run(name: str) -> None:
            events[name] = await harness[name].run(requests[name])

        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "a")
            tg.start_soon(run, "b")
        results = {name: final_result(events[name], requests[name]) for name in harness}
        assert results["a"].text == "a: wrote a.txt", results["a"]
        assert results["b"].text == "b: wrote b.txt", results["b"]

        # Round 2 of task a: the resumed conversation holds two model responses -> turns[2].
        again: AgentRequest = harness["a"].request(
            "review feedback: add a newline", session_id=results["a"].session_id
        )
        second = final_result(await harness["a"].run(again), again)
        routed_a = server.routed_requests("[task:a]")
        routed_b = server.routed_requests("[task:b]")
        unrouted = [r for r in server.model_requests() if "route" not in r.extra]

    assert second.text == "a: round 2 done", second
    assert (work_a / "a.txt").read_text() == "from a\n"
    assert (work_b / "b.txt").read_text() == "from b\n"
    assert [r.turn for r in routed_a] == [0, 1, 2]
    assert [r.turn for r in routed_b] == [0, 1]
    assert unrouted == []
    for h in harness.values():
        h.assert_nothing_left()
