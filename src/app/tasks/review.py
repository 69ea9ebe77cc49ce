"""The reviewer: an agent reads a pull request's diff and returns a verdict; ``decide``
applies it (squash-merge, or a comment with the requested changes).

The agent is reached through an :data:`Ask` (a prompt in, the agent's final text out), so
the same use case drives a worker's CLI, a scripted model, or a test double. Models wrap
JSON in prose and code fences, so :func:`parse_verdict` looks for the last JSON object with
a ``decision`` key anywhere in the answer; one unparseable answer earns one short follow-up
before :class:`~codeyard.domain.errors.ReviewUnparseable` is raised.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

from codeyard.domain.base import DomainModel
from codeyard.domain.code_host import (
    MergeConflict,
    MergeMethod,
    PullRequest,
    ReviewDecision,
    ReviewVerdict,
)
from codeyard.domain.errors import CodeyardError, ReviewUnparseable
from codeyard.ports.code_host import CodeHost

#: Runs a prompt on some agent and returns its final text.
Ask = Callable[[str], Awaitable[str]]

#: Routes the reviewer's conversation on a scripted model server (see the model server's
#: ``Router``) and tells a human reading the transcript what the conversation is.
REVIEW_MARKER = "[review]"
DEFAULT_MAX_DIFF_CHARS = 60_000
_EXCERPT_CHARS = 500
_QUOTED_ANSWER_CHARS = 4_000

_DECISIONS = {
    "approve": ReviewDecision.APPROVE,
    "approved": ReviewDecision.APPROVE,
    "request_changes": ReviewDecision.REQUEST_CHANGES,
    "changes_requested": ReviewDecision.REQUEST_CHANGES,
}
_FILE_HEADER = re.compile(r"^diff --git a/(.+?) b/", re.MULTILINE)
_ANSWER_FORMAT = (
    'Answer with ONLY a JSON object and nothing else: {"decision": "approve", "feedback": '
    '"<optional remarks>"} or {"decision": "request_changes", "feedback": "<what must change, '
    'specific enough to act on>"}.'
)


def truncate_diff(diff: str, max_chars: int) -> str:
    """``diff`` when it fits, else its first lines up to ``max_chars`` and a note naming
    the files whose changes are cut or left out (the reviewer must know it saw a part)."""
    if len(diff) <= max_chars:
        return diff
    cut = diff.rfind("\n", 0, max_chars)
    shown = diff[: cut + 1 if cut > 0 else max_chars]
    all_files = _FILE_HEADER.findall(diff)
    seen = _FILE_HEADER.findall(shown)
    # The last file shown is cut short too, unless the cut fell exactly on its end.
    complete = diff.startswith("diff --git ", len(shown))
    partial = [] if complete or not seen else seen[-1:]
    missing = all_files[len(seen) :]
    note = f"[diff truncated: {len(shown)} of {len(diff)} characters shown."
    if partial or missing:
        note += " Not shown in full: " + ", ".join(partial + missing) + "."
    return shown + note + "]\n"


def _fence(text: str) -> str:
    """A backtick fence longer than any backtick run in ``text``, so the diff cannot
    close it early."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def review_prompt(
    pr: PullRequest, diff: str, task: str, *, max_diff_chars: int = DEFAULT_MAX_DIFF_CHARS
) -> str:
    """The reviewer's prompt for ``pr``: starts with :data:`REVIEW_MARKER` and the PR
    number, holds the task, the PR description and the (truncated) diff, and asks for the
    verdict JSON only."""
    shown = truncate_diff(diff, max_diff_chars)
    if not shown.endswith("\n"):
        shown += "\n"
    fence = _fence(shown)
    description = pr.body.strip() or "(none)"
    return (
        f"{REVIEW_MARKER} Review pull request #{pr.number} of {pr.repo}: "
        f'"{pr.title}" ({pr.head} -> {pr.base}).\n\n'
        f"The task the change was made for:\n<task>\n{task}\n</task>\n\n"
        f"The pull request's description:\n<description>\n{description}\n</description>\n\n"
        f"The diff:\n{fence}diff\n{shown}{fence}\n\n"
        "Decide whether the change does the task correctly and can be merged as it is. "
        "Do not modify any file. "
        f"{_ANSWER_FORMAT}"
    )


def retry_prompt(pr: PullRequest, previous: str) -> str:
    """The follow-up after an unparseable answer. It quotes that answer, so it stands on
    its own even when ``ask`` starts a new conversation instead of continuing one."""
    quoted = previous.strip()[-_QUOTED_ANSWER_CHARS:] or "(empty)"
    return (
        f"{REVIEW_MARKER} Your review of pull request #{pr.number} could not be read. "
        f"{_ANSWER_FORMAT}\n\nYour previous answer:\n<answer>\n{quoted}\n</answer>"
    )


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every top-level JSON object embedded in ``text``, in order (prose, fences and
    invalid fragments between them skipped)."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    position = text.find("{")
    while position >= 0:
        try:
            value, end = decoder.raw_decode(text, position)
        except ValueError:
            position = text.find("{", position + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        position = text.find("{", end)
    return found


def _verdict(obj: dict[str, Any]) -> ReviewVerdict | None:
    fields = {str(k).strip().lower(): v for k, v in obj.items()}
    raw = fields.get("decision")
    if not isinstance(raw, str):
        return None
    decision = _DECISIONS.get(re.sub(r"[\s-]+", "_", raw.strip().lower()))
    if decision is None:
        return None
    feedback = fields.get("feedback")
    if isinstance(feedback, list):
        feedback = "\n".join(f"- {item}" for item in feedback)
    text = "" if feedback is None else str(feedback).strip()
    try:
        return ReviewVerdict(decision=decision, feedback=text)
    except CodeyardError:
        return None  # a change request without feedback is not a usable verdict


def parse_verdict(text: str) -> ReviewVerdict:
    """The verdict in a reviewer's answer: the LAST JSON object holding a ``decision`` key
    (keys and decision case-insensitive; ``"request changes"`` and ``"approved"`` accepted)
    that makes a valid verdict. Raises :class:`ReviewUnparseable` when there is none."""
    candidates = [o for o in _json_objects(text) if any(str(k).lower() == "decision" for k in o)]
    for obj in reversed(candidates):
        verdict = _verdict(obj)
        if verdict is not None:
            return verdict
    reason = "no valid verdict among the decision objects" if candidates else "no decision JSON"
    raise ReviewUnparseable(
        "the reviewer's answer holds no verdict", reason=reason, excerpt=text[-_EXCERPT_CHARS:]
    )


class Reviewer:
    """Asks an agent to review a pull request (see the module docstring)."""

    def __init__(
        self, code_host: CodeHost, ask: Ask, *, max_diff_chars: int = DEFAULT_MAX_DIFF_CHARS
    ) -> None:
        self._host = code_host
        self._ask = ask
        self._max_diff_chars = max_diff_chars

    async def review(self, pr: PullRequest, *, task: str) -> ReviewVerdict:
        """The agent's verdict on ``pr`` for ``task``. An unparseable answer is followed
        by one :func:`retry_prompt`; a second raises :class:`ReviewUnparseable`. Code host
        and agent errors propagate."""
        diff = await self._host.diff(pr.repo, pr.number)
        answer = await self._ask(review_prompt(pr, diff, task, max_diff_chars=self._max_diff_chars))
        try:
            return parse_verdict(answer)
        except ReviewUnparseable:
            pass
        again = await self._ask(retry_prompt(pr, answer))
        try:
            return parse_verdict(again)
        except ReviewUnparseable as exc:
            msg = "the reviewer gave no verdict, twice"
            raise ReviewUnparseable(msg, pr=pr.number, repo=pr.repo, **exc.fields) from exc


class DecisionKind(StrEnum):
    MERGED = "merged"
    CONFLICT = "conflict"
    CHANGES_REQUESTED = "changes_requested"


class DecisionOutcome(DomainModel):
    """What applying a verdict did. ``pr`` is the pull request as it is afterwards."""

    kind: DecisionKind
    pr: PullRequest
    #: The squash commit on the base (``merged``).
    merge_sha: str | None = None
    #: The paths that do not merge cleanly (``conflict``).
    conflict_files: tuple[str, ...] = ()
    #: The comment posted (``changes_requested``).
    feedback: str = ""


async def decide(
    code_host: CodeHost, pr: PullRequest, verdict: ReviewVerdict, *, message: str
) -> DecisionOutcome:
    """Apply ``verdict`` to ``pr``: approve squash-merges it with commit ``message``
    (``merged``, or ``conflict`` with the files when it no longer merges cleanly: the base
    is left untouched and the PR open); request_changes posts the feedback as a comment
    (``changes_requested``). Other code host errors (closed PR, outage) propagate."""
    if verdict.decision is ReviewDecision.REQUEST_CHANGES:
        await code_host.comment(pr.repo, pr.number, verdict.feedback)
        return DecisionOutcome(
            kind=DecisionKind.CHANGES_REQUESTED, pr=pr, feedback=verdict.feedback
        )
    try:
        merged = await code_host.merge(
            pr.repo, pr.number, method=MergeMethod.SQUASH, message=message
        )
    except MergeConflict as exc:
        files = tuple(str(f) for f in exc.fields.get("files") or ())
        return DecisionOutcome(kind=DecisionKind.CONFLICT, pr=pr, conflict_files=files)
    return DecisionOutcome(kind=DecisionKind.MERGED, pr=merged, merge_sha=merged.merge_sha)
