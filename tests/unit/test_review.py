"""The reviewer use case: prompt, verdict parsing, the one retry, and applying a verdict,
against a tiny in-memory CodeHost and scripted asks."""

from __future__ import annotations

import pytest

from codeyard.app.tasks.review import (
    DecisionKind,
    Reviewer,
    decide,
    parse_verdict,
    review_prompt,
    truncate_diff,
)
from codeyard.domain.code_host import (
    MergeConflict,
    MergeMethod,
    PullRequest,
    PullRequestClosed,
    PullRequestState,
    ReviewDecision,
    ReviewVerdict,
)
from codeyard.domain.errors import ReviewUnparseable
from codeyard.ports.code_host import CodeHost

pytestmark = pytest.mark.anyio

PR = PullRequest(repo="acme/app", number=7, head="task/a", base="main", title="Add hello")
DIFF = (
    "diff --git a/hello.py b/hello.py\n"
    "new file mode 100644\n"
    "--- /dev/null\n+++ b/hello.py\n@@ -0,0 +1 @@\n+print('hello')\n"
)


class FakeCodeHost:
    """One repository's pull requests in memory; ``conflict`` makes merges fail."""

    def __init__(self, diff: str = DIFF, conflict: tuple[str, ...] | None = None) -> None:
        self.prs = {PR.number: PR}
        self.diffs = {PR.number: diff}
        self.notes: dict[int, list[str]] = {}
        self.conflict = conflict
        self.merges: list[tuple[int, MergeMethod, str | None]] = []
        #: Each head's commits over any base, oldest first.
        self.commits: dict[str, list[str]] = {}

    async def open_pull_request(
        self, repo: str, *, head: str, base: str, title: str, body: str = ""
    ) -> PullRequest:
        number = len(self.prs) + 1
        pr = PullRequest(repo=repo, number=number, head=head, base=base, title=title, body=body)
        self.prs[number] = pr
        return pr

    async def get_pull_request(self, repo: str, number: int) -> PullRequest:
        return self.prs[number]

    async def diff(self, repo: str, number: int) -> str:
        return self.diffs[number]

    async def comment(self, repo: str, number: int, body: str) -> None:
        self.notes.setdefault(number, []).append(body)

    async def comments(self, repo: str, number: int) -> list[str]:
        return list(self.notes.get(number, []))

    async def branch_commits(self, repo: str, *, head: str, base: str) -> list[str]:
        return list(self.commits.get(head, ()))

    async def merge(
        self,
        repo: str,
        number: int,
        *,
        method: MergeMethod = MergeMethod.SQUASH,
        message: str | None = None,
    ) -> PullRequest:
        pr = self.prs[number]
        if pr.state is not PullRequestState.OPEN:
            raise PullRequestClosed("closed", repo=repo, number=number)
        if self.conflict is not None:
            raise MergeConflict("does not merge", files=list(self.conflict))
        self.merges.append((number, method, message))
        merged = pr.model_copy(update={"state": PullRequestState.MERGED, "merge_sha": "abc123"})
        self.prs[number] = merged
        return merged


class ScriptedAsk:
    """Answers prompts from a list, recording them."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    async def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.answers.pop(0)


def test_the_fake_is_a_code_host() -> None:
    assert isinstance(FakeCodeHost(), CodeHost)


# --- parse_verdict --------------------------------------------------------------------------


def test_prose_wrapped_json() -> None:
    text = 'Looks good to me. {"decision": "approve", "feedback": "clean"} Cheers.'
    assert parse_verdict(text) == ReviewVerdict(decision=ReviewDecision.APPROVE, feedback="clean")


def test_fenced_json_with_upper_case_decision() -> None:
    text = (
        'Verdict:\n```json\n{\n  "decision": "REQUEST_CHANGES",\n  "feedback": "add a test"\n}\n```'
    )
    verdict = parse_verdict(text)
    assert verdict.decision is ReviewDecision.REQUEST_CHANGES
    assert verdict.feedback == "add a test"


def test_the_last_decision_object_wins() -> None:
    text = (
        'First thought: {"decision": "approve", "feedback": ""}. On reflection, '
        '{"note": {"nested": 1}} {"Decision": "request changes", "feedback": "handle None"}'
    )
    verdict = parse_verdict(text)
    assert verdict.decision is ReviewDecision.REQUEST_CHANGES
    assert verdict.feedback == "handle None"


def test_objects_without_decision_and_invalid_verdicts_are_passed_over() -> None:
    text = (
        '{"decision": "approve"} then {"other": true} and an unusable '
        '{"decision": "request_changes", "feedback": "  "} and {"decision": "maybe"}'
    )
    assert parse_verdict(text).decision is ReviewDecision.APPROVE


def test_feedback_given_as_a_list_becomes_lines() -> None:
    verdict = parse_verdict('{"decision": "request_changes", "feedback": ["a", "b"]}')
    assert verdict.feedback == "- a\n- b"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I approve wholeheartedly!", "no decision JSON"),
        ('{"decision": approve}', "no decision JSON"),
        ('{"decision": "request_changes"}', "no valid verdict among the decision objects"),
    ],
)
def test_no_verdict_is_a_typed_error(text: str, reason: str) -> None:
    with pytest.raises(ReviewUnparseable) as caught:
        parse_verdict(text)
    assert caught.value.fields["reason"] == reason
    assert caught.value.fields["excerpt"] == text


# --- the prompt -----------------------------------------------------------------------------


def test_the_prompt_carries_the_marker_the_pr_the_task_and_the_diff() -> None:
    prompt = review_prompt(PR, DIFF, "write hello.py")
    assert prompt.startswith("[review] Review pull request #7 of acme/app")
    assert "write hello.py" in prompt
    assert "```diff\n" + DIFF + "```" in prompt
    assert '"decision"' in prompt


def test_a_diff_holding_backticks_gets_a_longer_fence() -> None:
    diff = DIFF + "+````\n"
    assert "`````diff\n" + diff + "`````" in review_prompt(PR, diff, "t")


def test_a_large_diff_is_truncated_with_a_note_naming_what_is_missing() -> None:
    second = "diff --git a/big.txt b/big.txt\n" + "+x\n" * 100
    third = "diff --git a/last.txt b/last.txt\n+y\n"
    diff = DIFF + second + third
    cut = truncate_diff(diff, len(DIFF) + 50)
    assert cut.startswith(DIFF)
    assert len(cut) < len(diff)
    assert "[diff truncated:" in cut
    assert cut.rstrip().endswith("Not shown in full: big.txt, last.txt.]")
    assert truncate_diff(diff, len(diff)) == diff
    # Cut right at the end of a file: that file is whole, only the later ones are missing.
    whole = truncate_diff(diff, len(DIFF))
    assert whole.startswith(DIFF)
    assert whole.rstrip().endswith("Not shown in full: big.txt, last.txt.]")
    assert (
        truncate_diff(diff, len(DIFF) + len(second))
        .rstrip()
        .endswith("Not shown in full: last.txt.]")
    )


async def test_review_sends_the_truncated_diff() -> None:
    host = FakeCodeHost(diff=DIFF + "+more\n" * 1000)
    ask = ScriptedAsk('{"decision": "approve"}')
    await Reviewer(host, ask, max_diff_chars=200).review(PR, task="t")
    (prompt,) = ask.prompts
    assert "[diff truncated: " in prompt
    assert len(prompt) < 2_000


# --- Reviewer.review ------------------------------------------------------------------------


async def test_review_returns_the_parsed_verdict() -> None:
    ask = ScriptedAsk('```json\n{"decision": "approve", "feedback": "ok"}\n```')
    verdict = await Reviewer(FakeCodeHost(), ask).review(PR, task="write hello.py")
    assert verdict == ReviewVerdict(decision=ReviewDecision.APPROVE, feedback="ok")
    assert len(ask.prompts) == 1
    assert "write hello.py" in ask.prompts[0]


async def test_garbage_then_a_verdict_on_the_retry() -> None:
    ask = ScriptedAsk("I think it is fine overall.", '{"decision": "approve"}')
    verdict = await Reviewer(FakeCodeHost(), ask).review(PR, task="t")
    assert verdict.decision is ReviewDecision.APPROVE
    retry = ask.prompts[1]
    assert retry.startswith("[review]")
    assert "#7" in retry
    assert "JSON" in retry
    # The retry quotes the first answer, so it stands alone in a fresh conversation too.
    assert "I think it is fine overall." in retry
    assert len(retry) < len(ask.prompts[0])


async def test_garbage_twice_raises() -> None:
    ask = ScriptedAsk("hmm", "still no json")
    with pytest.raises(ReviewUnparseable) as caught:
        await Reviewer(FakeCodeHost(), ask).review(PR, task="t")
    assert caught.value.fields["pr"] == 7
    assert caught.value.fields["excerpt"] == "still no json"
    assert len(ask.prompts) == 2


# --- decide -----------------------------------------------------------------------------------


async def test_approve_squash_merges() -> None:
    host = FakeCodeHost()
    verdict = ReviewVerdict(decision=ReviewDecision.APPROVE)
    outcome = await decide(host, PR, verdict, message="Add hello (#7)")
    assert outcome.kind is DecisionKind.MERGED
    assert outcome.merge_sha == "abc123"
    assert outcome.pr.state is PullRequestState.MERGED
    assert host.merges == [(7, MergeMethod.SQUASH, "Add hello (#7)")]
    assert host.notes == {}


async def test_approve_with_a_conflict_reports_the_files() -> None:
    host = FakeCodeHost(conflict=("hello.py", "README.md"))
    verdict = ReviewVerdict(decision=ReviewDecision.APPROVE)
    outcome = await decide(host, PR, verdict, message="m")
    assert outcome.kind is DecisionKind.CONFLICT
    assert outcome.conflict_files == ("hello.py", "README.md")
    assert outcome.merge_sha is None
    assert outcome.pr.state is PullRequestState.OPEN
    assert host.merges == []


async def test_request_changes_comments_the_feedback() -> None:
    host = FakeCodeHost()
    verdict = ReviewVerdict(decision=ReviewDecision.REQUEST_CHANGES, feedback="add a test")
    outcome = await decide(host, PR, verdict, message="m")
    assert outcome.kind is DecisionKind.CHANGES_REQUESTED
    assert outcome.feedback == "add a test"
    assert await host.comments("acme/app", 7) == ["add a test"]
    assert host.merges == []


async def test_a_closed_pr_is_not_swallowed() -> None:
    host = FakeCodeHost()
    host.prs[7] = PR.model_copy(update={"state": PullRequestState.CLOSED})
    with pytest.raises(PullRequestClosed):
        await decide(host, PR, ReviewVerdict(decision=ReviewDecision.APPROVE), message="m")
