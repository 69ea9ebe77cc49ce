"""The slice of OpenCode's HTTP API the adapter uses, over httpx (see serve-openapi.json).

Every call passes ``directory``: ``opencode serve`` keeps one instance per project
directory, and a session's events are only published on the ``/event`` stream of its own
directory (measured: ``/event`` without it stays silent for a session created with one).

Errors are translated here, at the adapter edge: a server that cannot be reached or does
not answer in time raises ``ServiceUnavailable`` (service ``opencode``); an unexpected HTTP
status raises ``AgentFailed`` with the status and the start of the body. Proxy settings
of the environment are ignored (``trust_env=False``): the server is always reached
directly, and a TLS-intercepting proxy must never see its password.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from codeyard.domain.errors import AgentFailed, ServiceUnavailable

JsonObject = dict[str, Any]


def _seg(value: str) -> str:
    """One path segment: a caller's session id must not reach another route."""
    return quote(value, safe="")


class OpencodeApi:
    def __init__(self, base_url: str, *, username: str, password: str, timeout_s: float) -> None:
        self.base_url = base_url
        self._client = httpx.AsyncClient(
            base_url=base_url,
            auth=httpx.BasicAuth(username, password),
            timeout=timeout_s,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        directory: str | None = None,
        json: Any = None,
        timeout_s: float | None = None,
        ok: tuple[int, ...] = (200, 204),
    ) -> httpx.Response:
        params = {"directory": directory} if directory else None
        kwargs: dict[str, Any] = {"params": params, "json": json}
        if timeout_s is not None:
            kwargs["timeout"] = timeout_s
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(
                f"opencode server unreachable ({type(exc).__name__})",
                service="opencode",
                url=self.base_url,
                path=path,
            ) from exc
        if response.status_code not in ok:
            raise AgentFailed(
                f"opencode answered HTTP {response.status_code} to {method} {path}",
                status=response.status_code,
                body=response.text[:500],
            )
        return response

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise AgentFailed(
                "opencode answered with invalid JSON", body=response.text[:500]
            ) from exc

    async def healthy(self, timeout_s: float) -> bool:
        """One health poll, answered within ``timeout_s`` or counted as not healthy."""
        try:
            response = await self._call("GET", "/global/health", timeout_s=timeout_s)
        except (ServiceUnavailable, AgentFailed):
            return False
        body = self._json(response)
        return isinstance(body, dict) and body.get("healthy") is True

    async def create_session(
        self, directory: str | None, permission: list[dict[str, str]] | None
    ) -> str:
        body: JsonObject = {"title": "codeyard"}
        if permission:
            body["permission"] = permission
        session = self._json(await self._call("POST", "/session", directory=directory, json=body))
        if not isinstance(session, dict) or not isinstance(session.get("id"), str):
            raise AgentFailed("opencode created a session without an id", body=str(session)[:500])
        return str(session["id"])

    async def get_session(self, session_id: str) -> JsonObject | None:
        """The session, or ``None`` when this server does not know it (or the id is not
        even of OpenCode's shape: the API answers 400 for that)."""
        response = await self._call("GET", f"/session/{_seg(session_id)}", ok=(200, 400, 404))
        if response.status_code != 200:
            return None
        session = self._json(response)
        return session if isinstance(session, dict) else None

    async def set_permission(
        self, session_id: str, directory: str | None, rules: list[dict[str, str]]
    ) -> None:
        path = f"/session/{_seg(session_id)}"
        await self._call("PATCH", path, directory=directory, json={"permission": rules})

    async def prompt(self, session_id: str, directory: str | None, body: JsonObject) -> None:
        path = f"/session/{_seg(session_id)}/prompt_async"
        await self._call("POST", path, directory=directory, json=body)

    async def abort(self, session_id: str, directory: str | None) -> None:
        await self._call("POST", f"/session/{_seg(session_id)}/abort", directory=directory)

    async def busy(self, session_id: str, directory: str | None) -> bool:
        """Whether the session is working (``busy`` or ``retry``); idle sessions are not
        listed by ``GET /session/status``."""
        status = self._json(await self._call("GET", "/session/status", directory=directory))
        return isinstance(status, dict) and session_id in status

    async def messages(self, session_id: str, directory: str | None) -> list[JsonObject]:
        path = f"/session/{_seg(session_id)}/message"
        messages = self._json(await self._call("GET", path, directory=directory))
        return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []

    async def reject(self, kind: str, ask_id: str, directory: str | None) -> None:
        """Refuse a pending permission request or question (nobody can answer it)."""
        if kind == "permission":
            path, body = f"/permission/{_seg(ask_id)}/reply", {"reply": "reject"}
            await self._call("POST", path, directory=directory, json=body)
        else:
            await self._call("POST", f"/question/{_seg(ask_id)}/reject", directory=directory)

    async def open_events(self, directory: str | None, last_event_id: str | None) -> httpx.Response:
        """``GET /event`` as a streaming response (the caller closes it): no read timeout,
        the agent's idle watchdog decides when silence is too long."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        params = {"directory": directory} if directory else None
        request = self._client.build_request(
            "GET",
            "/event",
            params=params,
            headers=headers,
            timeout=httpx.Timeout(self._client.timeout.connect, read=None),
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise ServiceUnavailable(
                f"opencode event stream unreachable ({type(exc).__name__})",
                service="opencode",
                url=self.base_url,
            ) from exc
        if response.status_code != 200:
            await response.aclose()
            raise AgentFailed(
                f"opencode answered HTTP {response.status_code} to GET /event",
                status=response.status_code,
            )
        return response
