"""The display of ``codeyard run`` / ``codeyard demo``: live progress, one row per task,
and the final summary.

:class:`Board` is fed by the task runner's hooks (``on_phase``, ``on_outcome``) and by
each task's worker events, which it follows itself (``client.events``) from the moment the
runner reports the worker id: tokens and cost from ``usage`` events, the last event as
``cli_render`` shows it. :meth:`Board.render` builds the table; ``rich.live.Live`` calls
it from its refresh thread, so rows are created up front and only their fields change.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
from rich.table import Table

from codeyard.app.cli_render import EventRenderer, is_worker_stopped, shorten
from codeyard.domain.errors import CodeyardError
from codeyard.domain.events import UsagePayload
from codeyard.domain.task_run import CodingTask, TaskOutcome, TaskStatus

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from codeyard.app.run_cli import RunResult
    from codeyard.app.tasks.run_tasks import TaskPhase
    from codeyard.client import CodeyardClient

log = structlog.get_logger(__name__)
_STATUS_STYLE = {
    TaskStatus.MERGED: "green",
    TaskStatus.CHANGES_REQUESTED: "yellow",
    TaskStatus.CONFLICT: "yellow",
    TaskStatus.FAILED: "red",
    TaskStatus.CANCELLED: "dim",
}
LAST_EVENT_CHARS = 70


@dataclass
class Row:
    task: CodingTask
    phase: str = "queued"
    round: int = 0
    started: float | None = None
    ended: float | None = None
    worker_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    last: str = ""
    outcome: TaskOutcome | None = None
    followed: set[str] = field(default_factory=set)

    def elapsed(self, now: float) -> str:
        if self.started is None:
            return "-"
        return f"{(self.ended or now) - self.started:.0f}s"

    def status(self) -> str:
        if self.outcome is None:
            return self.phase
        status = self.outcome.status
        return f"[{_STATUS_STYLE[status]}]{status.value}[/]"


class Board:
    """Per-task progress (see the module docstring)."""

    def __init__(self, tasks: list[CodingTask], *, title: str = "codeyard run") -> None:
        self.rows = {task.id: Row(task) for task in tasks}
        self.title = title
        self._client: CodeyardClient | None = None
        self._group: TaskGroup | None = None

    def follow_with(self, client: CodeyardClient, group: TaskGroup) -> None:
        """Follow each task's worker events with ``client``, in ``group`` (cancel it to
        stop following)."""
        self._client, self._group = client, group

    # --- the runner's hooks -------------------------------------------------------------

    def on_phase(self, phase: TaskPhase) -> None:
        row = self.rows[phase.task_id]
        if row.started is None:
            row.started = time.monotonic()
        row.phase, row.round = phase.phase.value, phase.round
        if phase.worker_id is not None and phase.worker_id not in row.followed:
            row.worker_id = phase.worker_id
            row.followed.add(phase.worker_id)
            if self._client is not None and self._group is not None:
                self._group.start_soon(self._follow, self._client, row, phase.worker_id)

    def on_outcome(self, outcome: TaskOutcome) -> None:
        row = self.rows[outcome.task_id]
        row.outcome, row.ended = outcome, time.monotonic()
        row.round = outcome.rounds
        row.cost_usd = max(row.cost_usd, outcome.cost_usd)
        if outcome.error:
            row.last = shorten(outcome.error, LAST_EVENT_CHARS)

    async def _follow(self, client: CodeyardClient, row: Row, worker_id: str) -> None:
        renderer = EventRenderer()
        try:
            async with aclosing(client.events(worker_id, block_s=0.5)) as events:
                async for item in events:
                    payload = item.event.payload
                    if isinstance(payload, UsagePayload):
                        row.input_tokens += payload.usage.input_tokens
                        row.output_tokens += payload.usage.output_tokens
                    result = item.result
                    if result is not None and result.cost_usd:
                        row.cost_usd += result.cost_usd
                    lines = renderer.feed(item.event)
                    if lines and row.outcome is None:
                        row.last = shorten(f"{lines[-1].kind}: {lines[-1].text}", LAST_EVENT_CHARS)
                    if is_worker_stopped(item.event):
                        return
        except CodeyardError as exc:  # the display must never end the run
            log.debug("worker events not followed", worker_id=worker_id, error=str(exc))

    # --- display -------------------------------------------------------------------------

    def render(self) -> Table:
        now = time.monotonic()
        table = Table(title=self.title, title_justify="left", expand=False)
        for column in ("Task", "Status", "Round", "Elapsed", "Tokens", "Cost"):
            table.add_column(column, no_wrap=True)
        table.add_column("Last event", overflow="ellipsis", no_wrap=True)
        for row in list(self.rows.values()):
            tokens = f"{row.input_tokens}/{row.output_tokens}" if row.input_tokens else "-"
            table.add_row(
                row.task.id,
                row.status(),
                str(row.round or "-"),
                row.elapsed(now),
                tokens,
                f"${row.cost_usd:.4f}" if row.cost_usd else "-",
                row.last or shorten(row.task.prompt, LAST_EVENT_CHARS),
            )
        return table


def summary_table(result: RunResult, title: str = "codeyard run: results") -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("Task", "Status", "Rounds", "Branch", "Commits", "PR", "Cost"):
        table.add_column(column, no_wrap=True)
    table.add_column("Note", overflow="fold")
    for outcome in result.outcomes:
        pr = outcome.pull_request
        branch = outcome.branch if outcome.branch in result.branches else "-"
        note = outcome.error or "; ".join(outcome.feedback)
        table.add_row(
            outcome.task_id, outcome.status.value, str(outcome.rounds), branch or "-",
            str(len(outcome.commits)), f"#{pr.number} {pr.state.value}" if pr else "-",
            f"${outcome.cost_usd:.4f}", note,
        )  # fmt: skip
    return table


def where_lines(result: RunResult) -> list[str]:
    """Where the results are, as lines for a person."""
    repo, base = result.repo, result.options.base
    lines = [f"results in {repo} (working tree and current branch untouched):"]
    for branch in sorted(result.branches):
        lines.append(f"  {branch}  {result.branches[branch][:12]}")
    lines.append(f"  everything merged:  git -C {repo} log --oneline {base}..codeyard/merged")
    first = next((b for b in result.branches if b != "codeyard/merged"), None)
    if first is not None:
        lines.append(f"  one task's diff:    git -C {repo} diff {base}...{first}")
    return lines
