"""The HTTP edge of the GitHub adapter: authentication, rate limits and error translation.

Every request goes to an absolute URL under ``api_url`` with the token in the
``Authorization`` header only. What any request can meet is translated here: transport
failures and 5xx answers become ``CodeHostUnavailable``; 403/429 answers that GitHub marks
as rate limiting (``x-ratelimit-remaining: 0``, a ``retry-after``, or a "rate limit"
message) become ``CodeHostUnavailable`` with ``retry_after_s`` and, when known,
``reset_at``; other 401/403 answers become ``CodeHostAuthFailed``. Answers that mean
something per operation (404, 405, 409, 422) are returned to the caller.

Errors carry the status, the URL path and GitHub's message: never a header, never the token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx

from codeyard.adapters.memory.clock import SystemClock
from codeyard.domain.code_host import CodeHostAuthFailed, CodeHostUnavailable
from codeyard.domain.errors import CodeyardError
from codeyard.ports.clock import Clock

JSON = "application/vnd.github+json"
DIFF = "application/vnd.github.diff"
API_VERSION = "2022-11-28"
# GitHub's advice for a secondary rate limit that names no time: wait at least a minute.
_DEFAULT_RETRY_S = 60.0

Sleep = Callable[[float], Awaitable[None]]


def github_message(response: httpx.Response) -> str:
    """GitHub's ``message`` (plus the ``errors[].message`` details of a 422), or the start of
    a non-JSON body (a proxy's 502 page)."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:200].strip()
    if not isinstance(data, dict):
        return ""
    parts = [str(data.get("message", ""))]
    for item in data.get("errors") or ():
        if isinstance(item, dict) and item.get("message"):
            parts.append(str(item["message"]))
        elif isinstance(item, dict) and item.get("field"):
            parts.append(f"{item['field']} {item.get('code', 'invalid')}")
    return ": ".join(p for p in parts if p)


def http_error(
    cls: type[CodeyardError], text: str, response: httpx.Response, **fields: Any
) -> CodeyardError:
    """An error describing ``response`` by status, path and GitHub's message only."""
    return cls(
        text,
        status=response.status_code,
        path=response.request.url.path,
        github_message=github_message(response),
        **fields,
    )


@dataclass(frozen=True)
class _RateLimit:
    retry_after_s: float
    reset_at: datetime | None


def _rate_limit(response: httpx.Response, now: datetime) -> _RateLimit | None:
    if response.status_code not in (403, 429):
        return None
    headers = response.headers
    reset_at: datetime | None = None
    if headers.get("x-ratelimit-reset", "").isdigit():
        reset_at = datetime.fromtimestamp(int(headers["x-ratelimit-reset"]), UTC)
    exhausted = headers.get("x-ratelimit-remaining") == "0"
    retry_after = headers.get("retry-after", "")
    if retry_after.isdigit():
        return _RateLimit(float(retry_after), reset_at if exhausted else None)
    if exhausted and reset_at is not None:
        return _RateLimit(max(0.0, (reset_at - now).total_seconds()), reset_at)
    if response.status_code == 429 or "rate limit" in github_message(response).lower():
        return _RateLimit(_DEFAULT_RETRY_S, None)
    return None


class GitHubApi:
    """Sends requests on a caller-owned client; see the module docstring for the contract.

    With ``wait_on_rate_limit`` a rate-limited request whose wait is at most ``max_wait_s``
    sleeps that long (``sleep``, injectable for tests) and is retried once; otherwise, or
    when the retry is limited again, ``CodeHostUnavailable`` is raised.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        token: str,
        api_url: str,
        wait_on_rate_limit: bool = False,
        max_wait_s: float = 60.0,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not token:
            raise CodeHostAuthFailed("a GitHub token is required")
        self._client = client
        self._token = token
        self.api_url = api_url.rstrip("/")
        self._wait = wait_on_rate_limit
        self._max_wait_s = max_wait_s
        self._sleep: Sleep = sleep or anyio.sleep
        self._clock: Clock = clock or SystemClock()

    def owns(self, url: str) -> bool:
        """Whether ``url`` is under ``api_url`` (a pagination link elsewhere must never
        receive the token)."""
        return url == self.api_url or url.startswith(self.api_url + "/")

    async def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        accept: str = JSON,
    ) -> httpx.Response:
        """Send ``method url`` (a path under ``api_url``, or a URL it :meth:`owns`)."""
        if not url.startswith(("http://", "https://")):
            url = self.api_url + url
        if not self.owns(url):
            raise CodeHostUnavailable("GitHub sent a link outside its API", path=url[:200])
        headers = {
            "Accept": accept,
            "Authorization": f"Bearer {self._token}",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "codeyard",
        }
        retried = False
        while True:
            response = await self._send(method, url, headers=headers, json=json, params=params)
            limit = _rate_limit(response, self._clock.now())
            if limit is None:
                return self._check(response)
            if self._wait and not retried and limit.retry_after_s <= self._max_wait_s:
                retried = True
                await self._sleep(limit.retry_after_s)
                continue
            raise http_error(
                CodeHostUnavailable,
                "GitHub rate limit reached",
                response,
                retry_after_s=limit.retry_after_s,
                reset_at=limit.reset_at.isoformat() if limit.reset_at else None,
            )

    async def _send(
        self, method: str, url: str, *, headers: dict[str, str], json: Any, params: Any
    ) -> httpx.Response:
        try:
            response = await self._client.request(
                method, url, headers=headers, json=json, params=params
            )
            await response.aread()
        except httpx.TransportError as exc:
            # type name and path only: an exception's text may echo the request.
            raise CodeHostUnavailable(
                f"GitHub unreachable ({type(exc).__name__})", path=httpx.URL(url).path
            ) from exc
        return response

    @staticmethod
    def _check(response: httpx.Response) -> httpx.Response:
        status = response.status_code
        if status >= 500:
            raise http_error(CodeHostUnavailable, f"GitHub answered HTTP {status}", response)
        if status in (401, 403):
            raise http_error(CodeHostAuthFailed, "GitHub refused the credentials", response)
        return response
