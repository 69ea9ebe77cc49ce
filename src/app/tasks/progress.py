"""Where one task of a :class:`~codeyard.app.tasks.run_tasks.TaskRunner` stands, and how
its turns' results are read: throttled (retry the turn) or its worker died (retry the task
on a new worker, up to a limit, then dead-letter it)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from codeyard.domain.agent import AgentResult, ResultStatus
from codeyard.domain.code_host import PullRequest
from codeyard.domain.task_run import CodingTask, TaskOutcome, TaskStatus

_THROTTLED = ("429", "529", "rate limit", "rate_limit", "overloaded", "too many requests")
#: The ``terminal_reason`` of the result the manager publishes when a worker's container
#: died (``codeyard.app.manager.launch.death_reason``). Matched exactly, not by the
#: ``container_`` prefix alone: an error code such as ``container_not_found`` raised inside
#: a live worker is no death.
_DEATH = re.compile(r"container_(?:oom|killed|terminated|vanished|exited_-?\d+)")


class Phase(StrEnum):
    """Where a task is, for progress displays (``TaskRunner.run(on_phase=...)``)."""

    STARTING = "starting"
    CODING = "coding"
    REVIEWING = "reviewing"


@dataclass(frozen=True)
class TaskPhase:
    """A task entered ``phase`` in ``round`` (0 before the first); ``worker_id`` once the
    task's worker exists (follow its events with ``client.events``)."""

    task_id: str
    phase: Phase
    round: int
    worker_id: str | None


class WorkerDied(Exception):
    """The task's worker died during (or before) a turn; ``reason`` is the manager's."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def throttled(result: AgentResult) -> bool:
    """Whether a failed result says the model provider throttled the request."""
    if result.status is ResultStatus.SUCCESS:
        return False
    text = f"{result.terminal_reason or ''} {result.error or ''}".lower()
    return any(mark in text for mark in _THROTTLED)


def worker_death(result: AgentResult) -> str | None:
    """The death reason (``container_killed``...) when ``result`` says the worker died."""
    if result.status is ResultStatus.SUCCESS:
        return None
    reason = result.terminal_reason or ""
    return reason if _DEATH.fullmatch(reason) else None


def feedback_prompt(task: CodingTask, feedback: str) -> str:
    return (
        f"A reviewer looked at your change for task {task.id} and asks for changes:\n\n"
        f"{feedback}\n\nUpdate the code accordingly."
    )


def dead_letter(reasons: Sequence[str], retries: int) -> str:
    """The error of a task given up because its workers kept dying."""
    return (
        f"dead_letter: the task's worker died {len(reasons)} times "
        f"({retries} retries allowed): {', '.join(reasons)}"
    )


@dataclass
class TaskProgress:
    task: CodingTask
    worker_id: str | None = None
    #: The worker still to delete (``worker_id`` stays the last one, for the outcome).
    live_worker: str | None = None
    #: Turns sent to the current worker: a new worker has no session to resume.
    turns_on_worker: int = 0
    commits: list[str] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)
    worker_failures: list[str] = field(default_factory=list)
    pr: PullRequest | None = None
    rounds: int = 0
    cost: float = 0.0
    on_phase: Callable[[TaskPhase], None] | None = None

    def enter(self, phase: Phase) -> None:
        if self.on_phase is not None:
            self.on_phase(TaskPhase(self.task.id, phase, self.rounds, self.worker_id))

    def on_new_worker(self, worker_id: str) -> None:
        self.worker_id = self.live_worker = worker_id
        self.turns_on_worker = 0

    def prompt(self) -> str:
        """The current round's prompt: the task's, or the last feedback. A feedback round
        on a replacement worker (no session) gets the task's prompt first: the feedback
        alone would not say what the change is for."""
        if not self.feedback:
            return self.task.prompt
        feedback = feedback_prompt(self.task, self.feedback[-1])
        if self.turns_on_worker == 0:
            return f"{self.task.prompt}\n\n{feedback}"
        return feedback

    def outcome(self, status: TaskStatus, **extra: object) -> TaskOutcome:
        return TaskOutcome.model_validate(
            {
                "task_id": self.task.id,
                "status": status,
                "worker_id": self.worker_id,
                "branch": self.task.branch,
                "commits": tuple(self.commits),
                "pull_request": self.pr,
                "rounds": self.rounds,
                "cost_usd": self.cost,
                "feedback": tuple(self.feedback),
                "worker_failures": tuple(self.worker_failures),
                **extra,
            }
        )
