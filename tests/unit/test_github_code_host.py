"""GitHubCodeHost against recorded GitHub exchanges (tests/fixtures/github/*.json).

Each fixture is the ordered list of requests the adapter must send (method, path, query)
and GitHub's answer to each (status, headers, body). httpx.MockTransport replays them: a
request out of order or one too many fails the test, and every exchange must be used.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from codeyard.adapters.github import GitHubCodeHost
from codeyard.adapters.memory.clock import ManualClock
from codeyard.domain.code_host import (
    CodeHostAuthFailed,
    CodeHostUnavailable,
    MergeBlocked,
    MergeConflict,
    MergeMethod,
    PullRequestClosed,
    PullRequestHeadChanged,
    PullRequestNotFound,
    PullRequestState,
    RepositoryNotFound,
)
from codeyard.domain.errors import CodeyardError, InvalidRequest
from codeyard.ports.code_host import CodeHost

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "github"
TOKEN = "ghp_S3cr3tT0kenValue0123456789abcdefABCD"
REPO = "acme/widgets"
HEAD_SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
MERGE_SHA = "e5bd3914e2e596debea16f433f57875b5b90bcd6"


class Replay:
    """A MockTransport handler answering each request with the next recorded exchange."""

    def __init__(self, name: str) -> None:
        self.exchanges: list[dict[str, Any]] = json.loads((FIXTURES / f"{name}.json").read_text())[
            "exchanges"
        ]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        index = len(self.requests)
        self.requests.append(request)
        assert index < len(self.exchanges), f"unexpected extra request {request.url}"
        ex = self.exchanges[index]
        assert (request.method, request.url.path) == (ex["method"], ex["path"])
        assert dict(request.url.params) == ex.get("query", {})
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        body = ex["body"]
        content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        return httpx.Response(ex["status"], headers=ex["headers"], content=content)

    def assert_done(self) -> None:
        assert len(self.requests) == len(self.exchanges)


class FakeSleep:
    """Records the waits and moves the clock instead of sleeping."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[..., Any]]:
    clients: list[httpx.AsyncClient] = []

    def make(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
        clients.append(httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()


def host(client: httpx.AsyncClient, **options: Any) -> GitHubCodeHost:
    return GitHubCodeHost(client, token=TOKEN, **options)


def assert_token_hidden(error: CodeyardError) -> None:
    for text in (str(error), repr(error), json.dumps(error.to_dict())):
        assert TOKEN not in text
        assert "Bearer" not in text


async def test_is_a_code_host(client_for: Callable[..., Any]) -> None:
    assert isinstance(host(client_for(Replay("get_pr"))), CodeHost)


async def test_open_pull_request_creates_it(client_for: Callable[..., Any]) -> None:
    replay = Replay("create_pr")
    pr = await host(client_for(replay)).open_pull_request(
        REPO, head="feature/login", base="main", title="Add login form", body="Implements"
    )
    replay.assert_done()
    assert json.loads(replay.requests[0].content) == {
        "title": "Add login form",
        "head": "feature/login",
        "base": "main",
        "body": "Implements",
    }
    assert replay.requests[0].headers["accept"] == "application/vnd.github+json"
    assert (pr.number, pr.state, pr.head, pr.base) == (
        42,
        PullRequestState.OPEN,
        "feature/login",
        "main",
    )
    assert pr.head_sha == HEAD_SHA
    assert pr.merge_sha is None  # GitHub's test-merge sha of an open PR is not a merge
    assert pr.url == "https://github.com/acme/widgets/pull/42"
    assert pr.created_at == datetime(2026, 1, 1, 9, 30, tzinfo=UTC)


async def test_open_pull_request_returns_the_existing_open_one(
    client_for: Callable[..., Any],
) -> None:
    replay = Replay("create_pr_exists")
    pr = await host(client_for(replay)).open_pull_request(
        REPO, head="feature/login", base="main", title="Add login form"
    )
    replay.assert_done()
    assert (pr.number, pr.state, pr.title) == (42, PullRequestState.OPEN, "Add login form")


async def test_open_pull_request_with_missing_head_is_invalid(
    client_for: Callable[..., Any],
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await host(client_for(Replay("create_pr_missing_head"))).open_pull_request(
            REPO, head="nope", base="main", title="t"
        )
    assert caught.value.fields["status"] == 422
    assert caught.value.fields["github_message"] == "Validation Failed: head invalid"
    assert caught.value.fields["path"] == "/repos/acme/widgets/pulls"
    assert_token_hidden(caught.value)


async def test_open_pull_request_in_unknown_repository(client_for: Callable[..., Any]) -> None:
    with pytest.raises(RepositoryNotFound):
        await host(client_for(Replay("create_pr_no_repo"))).open_pull_request(
            REPO, head="feature/login", base="main", title="t"
        )


async def test_get_pull_request(client_for: Callable[..., Any]) -> None:
    pr = await host(client_for(Replay("get_pr"))).get_pull_request(REPO, 42)
    assert (pr.repo, pr.number, pr.title) == (REPO, 42, "Add login form")
    assert pr.body == "Implements the login form.\n\nTask: t-123"


async def test_diff_asks_for_the_diff_media_type(client_for: Callable[..., Any]) -> None:
    replay = Replay("diff")
    diff = await host(client_for(replay)).diff(REPO, 42)
    assert replay.requests[0].headers["accept"] == "application/vnd.github.diff"
    assert diff.startswith("diff --git a/src/login.py b/src/login.py\n")
    assert "+def login(user: str) -> bool:" in diff


async def test_comment_then_comments_across_pages(client_for: Callable[..., Any]) -> None:
    replay = Replay("comments")
    github = host(client_for(replay))
    await github.comment(REPO, 42, "Please add a test.")
    assert json.loads(replay.requests[0].content) == {"body": "Please add a test."}
    assert await github.comments(REPO, 42) == [
        "First review: looks good.",
        "One nit.",
        "Please add a test.",
    ]
    replay.assert_done()


def compare_pages(shas: list[str]) -> Callable[[httpx.Request], httpx.Response]:
    """GitHub's compare endpoint over ``shas`` (oldest first), paged by ``per_page``/``page``
    as GitHub pages it; every page repeats ``total_commits``."""

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/repos/acme/widgets/compare/main...feature/login"
        size, page = int(request.url.params["per_page"]), int(request.url.params["page"])
        batch = shas[(page - 1) * size : page * size]
        body = {
            "status": "ahead",
            "ahead_by": len(shas),
            "total_commits": len(shas),
            "commits": [{"sha": sha, "commit": {"message": "m"}} for sha in batch],
        }
        return httpx.Response(200, json=body)

    return handle


@pytest.mark.parametrize("count", [0, 3, 100, 230])
async def test_branch_commits_reads_every_compare_page(
    client_for: Callable[..., Any], count: int
) -> None:
    shas = [f"{n:040x}" for n in range(1, count + 1)]
    handler = compare_pages(shas)
    pages: list[str] = []

    def counting(request: httpx.Request) -> httpx.Response:
        pages.append(request.url.params["page"])
        return handler(request)

    github = host(client_for(counting))
    assert await github.branch_commits(REPO, head="feature/login", base="main") == shas
    assert len(pages) == max(1, -(-count // 100))  # no extra request past the last page


async def test_branch_commits_of_an_unknown_ref_is_invalid(
    client_for: Callable[..., Any],
) -> None:
    replay = Replay("compare_unknown_ref")
    with pytest.raises(InvalidRequest) as caught:
        await host(client_for(replay)).branch_commits(REPO, head="task/never", base="main")
    replay.assert_done()
    assert caught.value.fields["status"] == 404
    assert_token_hidden(caught.value)


async def test_branch_commits_refuses_a_ref_that_would_split_the_compare_path(
    client_for: Callable[..., Any],
) -> None:
    replay = Replay("compare_unknown_ref")
    with pytest.raises(InvalidRequest):
        await host(client_for(replay)).branch_commits(REPO, head="a...b", base="main")
    assert replay.requests == []


async def test_squash_merge_returns_the_merged_pull_request(
    client_for: Callable[..., Any],
) -> None:
    replay = Replay("merge_squash")
    pr = await host(client_for(replay)).merge(REPO, 42)
    replay.assert_done()
    assert json.loads(replay.requests[1].content) == {
        "merge_method": "squash",
        "sha": HEAD_SHA,
        "commit_title": "Add login form (#42)",
    }
    assert (pr.state, pr.merge_sha) == (PullRequestState.MERGED, MERGE_SHA)


async def test_merge_message_gives_title_and_body(client_for: Callable[..., Any]) -> None:
    replay = Replay("merge_squash")
    await host(client_for(replay)).merge(
        REPO, 42, method=MergeMethod.MERGE, message="Login form\n\nCloses #7\n"
    )
    sent = json.loads(replay.requests[1].content)
    assert sent["merge_method"] == "merge"
    assert (sent["commit_title"], sent["commit_message"]) == ("Login form", "Closes #7")


@pytest.mark.parametrize(
    ("fixture", "error"),
    [
        ("merge_not_mergeable", MergeConflict),
        ("merge_blocked", MergeBlocked),
        ("merge_head_changed", PullRequestHeadChanged),
        ("merge_already_merged", PullRequestClosed),
        ("merge_race_already_merged", PullRequestClosed),
    ],
)
async def test_merge_refusals(
    client_for: Callable[..., Any], fixture: str, error: type[CodeyardError]
) -> None:
    replay = Replay(fixture)
    with pytest.raises(error) as caught:
        await host(client_for(replay)).merge(REPO, 42)
    replay.assert_done()
    assert type(caught.value) is error
    assert_token_hidden(caught.value)
    if error is MergeConflict:
        assert caught.value.fields["files"] == []
        assert caught.value.fields["github_message"] == "Pull Request is not mergeable"


async def test_unknown_pull_request(client_for: Callable[..., Any]) -> None:
    replay = Replay("pr_not_found")
    with pytest.raises(PullRequestNotFound) as caught:
        await host(client_for(replay)).get_pull_request(REPO, 999)
    replay.assert_done()
    assert caught.value.fields["number"] == 999
    assert_token_hidden(caught.value)


async def test_unknown_repository(client_for: Callable[..., Any]) -> None:
    with pytest.raises(RepositoryNotFound):
        await host(client_for(Replay("repo_not_found"))).get_pull_request("acme/nope", 1)


@pytest.mark.parametrize("repo", ["widgets", "acme/../x", "../widgets", "a/b/c", "acme/"])
async def test_repository_must_be_owner_slash_name(
    client_for: Callable[..., Any], repo: str
) -> None:
    replay = Replay("get_pr")
    with pytest.raises(InvalidRequest):
        await host(client_for(replay)).get_pull_request(repo, 42)
    assert replay.requests == []


async def test_bad_credentials(client_for: Callable[..., Any]) -> None:
    with pytest.raises(CodeHostAuthFailed) as caught:
        await host(client_for(Replay("bad_credentials"))).get_pull_request(REPO, 42)
    assert caught.value.fields["status"] == 401
    assert caught.value.fields["github_message"] == "Bad credentials"
    assert_token_hidden(caught.value)


async def test_missing_permission(client_for: Callable[..., Any]) -> None:
    with pytest.raises(CodeHostAuthFailed) as caught:
        await host(client_for(Replay("forbidden"))).comment(REPO, 42, "hi")
    assert caught.value.fields["status"] == 403
    assert_token_hidden(caught.value)


async def test_primary_rate_limit_raises_with_reset(client_for: Callable[..., Any]) -> None:
    clock = ManualClock()  # 2026-01-01T00:00Z; the recorded reset is one hour later
    github = host(client_for(Replay("rate_limited_403")), clock=clock)
    with pytest.raises(CodeHostUnavailable) as caught:
        await github.get_pull_request(REPO, 42)
    assert caught.value.retryable
    assert caught.value.fields["reset_at"] == "2026-01-01T01:00:00+00:00"
    assert caught.value.fields["retry_after_s"] == 3600.0
    assert_token_hidden(caught.value)


async def test_rate_limit_beyond_max_wait_is_not_waited(client_for: Callable[..., Any]) -> None:
    clock = ManualClock()
    sleep = FakeSleep(clock)
    github = host(
        client_for(Replay("rate_limited_403")),
        clock=clock,
        sleep=sleep,
        wait_on_rate_limit=True,
        max_wait_s=60,
    )
    with pytest.raises(CodeHostUnavailable):
        await github.get_pull_request(REPO, 42)
    assert sleep.waits == []


async def test_secondary_rate_limit_retry_after(client_for: Callable[..., Any]) -> None:
    with pytest.raises(CodeHostUnavailable) as caught:
        await host(client_for(Replay("rate_limited_429"))).get_pull_request(REPO, 42)
    assert caught.value.fields["status"] == 429
    assert caught.value.fields["retry_after_s"] == 30.0
    assert caught.value.fields["reset_at"] is None
    assert_token_hidden(caught.value)


async def test_wait_on_rate_limit_sleeps_until_reset_then_retries(
    client_for: Callable[..., Any],
) -> None:
    clock = ManualClock()
    sleep = FakeSleep(clock)
    replay = Replay("rate_limited_then_ok")
    github = host(client_for(replay), clock=clock, sleep=sleep, wait_on_rate_limit=True)
    pr = await github.get_pull_request(REPO, 42)
    replay.assert_done()
    assert sleep.waits == [20.0]
    assert pr.number == 42


async def test_bad_gateway_is_unavailable(client_for: Callable[..., Any]) -> None:
    with pytest.raises(CodeHostUnavailable) as caught:
        await host(client_for(Replay("bad_gateway"))).get_pull_request(REPO, 42)
    assert caught.value.fields["status"] == 502
    assert "502 Bad Gateway" in caught.value.fields["github_message"]
    assert_token_hidden(caught.value)


async def test_transport_error_is_unavailable(client_for: Callable[..., Any]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"connection refused {request.headers}", request=request)

    with pytest.raises(CodeHostUnavailable) as caught:
        await host(client_for(refuse)).get_pull_request(REPO, 42)
    assert caught.value.fields == {"path": "/repos/acme/widgets/pulls/42"}
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert_token_hidden(caught.value)


async def test_pagination_never_follows_a_link_off_the_api(
    client_for: Callable[..., Any],
) -> None:
    def foreign_next(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "api.github.com"
        link = '<https://evil.example/steal?page=2>; rel="next"'
        return httpx.Response(200, headers={"link": link}, json=[{"body": "one"}])

    with pytest.raises(CodeHostUnavailable):
        await host(client_for(foreign_next)).comments(REPO, 42)


async def test_connect_opens_and_closes_its_client() -> None:
    async with GitHubCodeHost.connect(TOKEN) as github:
        client = github._api._client
        assert not client.is_closed
    assert client.is_closed
