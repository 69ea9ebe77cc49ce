"""GitHub names, paths and answers <-> the CodeHost domain, for :mod:`.code_host`."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from codeyard.adapters.github.api import http_error
from codeyard.domain.code_host import PullRequest, PullRequestState
from codeyard.domain.errors import CodeyardError, InvalidRequest

# One owner or repository name; "." and ".." would let a path climb out of /repos/.
_PART_RE = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9_.-]{1,100}$")


def split_repo(repo: str) -> tuple[str, str]:
    owner, sep, name = repo.partition("/")
    if not sep or not _PART_RE.match(owner) or not _PART_RE.match(name):
        raise InvalidRequest("a GitHub repository is OWNER/NAME", repo=repo)
    return owner, name


def repo_path(repo: str) -> str:
    owner, name = split_repo(repo)
    return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"


def compare_ref(ref: str) -> str:
    """A branch or SHA for a compare path: "..." inside it would split it elsewhere."""
    if not ref or "..." in ref or ref.startswith("/"):
        raise InvalidRequest("not a branch name or commit", ref=ref)
    return quote(ref, safe="/")


def check_number(number: int) -> int:
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise InvalidRequest("a pull request number is a positive integer", number=number)
    return number


def pull_path(repo: str, number: int) -> str:
    return f"{repo_path(repo)}/pulls/{check_number(number)}"


def parse_json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise unexpected(response) from exc


def unexpected(response: httpx.Response) -> CodeyardError:
    return http_error(
        InvalidRequest, f"unexpected GitHub answer HTTP {response.status_code}", response
    )


def pull_request_from(repo: str, data: Any) -> PullRequest:
    """A GitHub pull object (single or list item: the list lacks ``merged``) as a PullRequest."""
    try:
        merged = bool(data.get("merged")) or data.get("merged_at") is not None
        if merged:
            state = PullRequestState.MERGED
        elif data["state"] == "open":
            state = PullRequestState.OPEN
        else:
            state = PullRequestState.CLOSED
        created = data.get("created_at")
        return PullRequest(
            repo=repo,
            number=data["number"],
            head=data["head"]["ref"],
            base=data["base"]["ref"],
            title=data["title"],
            body=data.get("body") or "",
            state=state,
            url=data.get("html_url") or "",
            head_sha=data["head"].get("sha"),
            merge_sha=data.get("merge_commit_sha") if merged else None,
            created_at=datetime.fromisoformat(created) if created else None,
        )
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise InvalidRequest(
            "GitHub sent a pull request in an unexpected shape", repo=repo
        ) from exc
