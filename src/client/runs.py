"""One run (one prompt) of a worker, collected from its output events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog

from codeyard.client.events import WorkerEvent, matches_run
from codeyard.domain.agent import AgentResult
from codeyard.domain.code_host import GitReport
from codeyard.domain.errors import CodeyardError
from codeyard.domain.events import AgentEvent, LifecyclePayload

log = structlog.get_logger(__name__)
GIT_STATE = "git"


@dataclass(frozen=True)
class RunReport:
    """A finished run: its result, the git report (when the turn had a git step), the
    entry id of its last event (resume reading after it) and every event of the run."""

    result: AgentResult
    entry_id: str
    git: GitReport | None = None
    events: tuple[AgentEvent, ...] = field(default=(), repr=False)


async def collect_run(events: AsyncIterator[WorkerEvent], request_id: str) -> RunReport:
    """Read ``events`` until the run ``request_id`` ends (or its worker dies)."""
    seen: list[AgentEvent] = []
    git: GitReport | None = None
    async for item in events:
        event = item.event
        if event.run_id == request_id:
            seen.append(event)
            payload = event.payload
            if isinstance(payload, LifecyclePayload) and payload.state == GIT_STATE:
                try:
                    git = GitReport.parse(payload.detail)
                except CodeyardError as exc:
                    log.warning("unreadable git report", request_id=request_id, error=str(exc))
        result = matches_run(item, request_id)
        if result is not None:
            return RunReport(result=result, entry_id=item.entry_id, git=git, events=tuple(seen))
    raise AssertionError("unreachable: the event iterator never ends")  # pragma: no cover
