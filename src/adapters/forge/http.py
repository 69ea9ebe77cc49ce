"""Git smart HTTP for the forge: an ASGI app running ``git http-backend`` as a CGI program.

One ``git http-backend`` process per request, with the request body streamed to its stdin
and its stdout (CGI headers, then the body) streamed back, so packs of any size pass
without being held in memory. HTTP Basic auth: any user name, the password must equal the
token; anything else gets 401 with ``WWW-Authenticate: Basic`` so that git asks its
credential helper. The ``Authorization`` header is never logged nor handed to the CGI.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import ByteReceiveStream, ByteSendStream
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from codeyard.adapters.forge.git import git_env

log = structlog.get_logger(__name__)

_READ_SIZE = 65536
#: A CGI header block larger than this is not from http-backend: give up.
_MAX_HEADER_BYTES = 65536
#: Request headers that never reach the CGI environment (credentials).
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="codeyard forge", charset="UTF-8"'}


def basic_user(header: str | None, token: str) -> str | None:
    """The user name of a Basic ``Authorization`` header whose password is ``token``."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not hmac.compare_digest(password.encode(), token.encode()):
        return None
    return user or "git"


class GitHttpApp:
    """ASGI app serving every repository under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, *, token: str, git_home: Path) -> None:
        if not token:
            msg = "the forge server needs a non-empty token"
            raise ValueError(msg)
        self.root = root
        self._token = token
        # receive-pack is off by default in http-backend: pushes are what workers do.
        self._base_env = git_env(git_home, config={"http.receivepack": "true"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        user = basic_user(request.headers.get("authorization"), self._token)
        if user is None:
            response = PlainTextResponse("authentication required\n", 401, headers=_CHALLENGE)
            await response(scope, receive, send)
            return
        path: str = scope["path"]
        # No path component may start with a dot: that keeps ".forge" (scratch, HOME) and
        # any "..", which http-backend refuses anyway, out of reach.
        if any(part.startswith(".") for part in path.split("/")):
            await PlainTextResponse("not found\n", 404)(scope, receive, send)
            return
        await self._run_cgi(request, self._cgi_env(request, path, user), send)

    def _cgi_env(self, request: Request, path: str, user: str) -> dict[str, str]:
        env = dict(self._base_env)
        env.update(
            GIT_PROJECT_ROOT=str(self.root),
            GIT_HTTP_EXPORT_ALL="1",
            GATEWAY_INTERFACE="CGI/1.1",
            SERVER_PROTOCOL=f"HTTP/{request.scope.get('http_version', '1.1')}",
            REQUEST_METHOD=request.method,
            PATH_INFO=path,
            QUERY_STRING=request.scope.get("query_string", b"").decode("latin-1"),
            REMOTE_USER=user,
            REMOTE_ADDR=request.client.host if request.client else "",
        )
        for name, value in request.headers.items():
            if name in _SECRET_HEADERS:
                continue
            if name == "content-type":
                env["CONTENT_TYPE"] = value
            elif name == "content-length":
                env["CONTENT_LENGTH"] = value
            else:
                # HTTP_CONTENT_ENCODING (gzip bodies) and HTTP_GIT_PROTOCOL (v2) matter.
                env["HTTP_" + name.upper().replace("-", "_")] = value
        return env

    async def _run_cgi(self, request: Request, env: Mapping[str, str], send: Send) -> None:
        process = await anyio.open_process(
            ["git", "http-backend"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
        )
        stderr: list[bytes] = []
        try:
            assert process.stdin
            assert process.stdout
            assert process.stderr
            async with anyio.create_task_group() as tg:
                tg.start_soon(_feed, request, process.stdin)
                tg.start_soon(_collect, process.stderr, stderr)
                await _relay(process.stdout, send)
            returncode = await process.wait()
            if returncode != 0:
                log.warning(
                    "forge.http_backend_failed",
                    path=env["PATH_INFO"],
                    method=env["REQUEST_METHOD"],
                    returncode=returncode,
                    stderr=b"".join(stderr)[-2000:].decode(errors="replace"),
                )
        finally:
            # A client gone mid-request (cancellation) must not leave http-backend behind.
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                if process.returncode is None:
                    process.kill()
                await process.aclose()


async def _feed(request: Request, stdin: ByteSendStream) -> None:
    try:
        async for chunk in request.stream():
            if chunk:
                await stdin.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass  # http-backend stopped reading (it answered an error): the reply says why.
    finally:
        await stdin.aclose()


async def _collect(stream: ByteReceiveStream, into: list[bytes]) -> None:
    async for chunk in stream:
        into.append(chunk)


async def _relay(stdout: ByteReceiveStream, send: Send) -> None:
    """Turn the CGI output into an HTTP response, streaming the body."""
    buffer = b""
    async for chunk in stdout:
        buffer += chunk
        if b"\r\n\r\n" in buffer or b"\n\n" in buffer or len(buffer) > _MAX_HEADER_BYTES:
            break
    head, body = _split_headers(buffer)
    if head is None:
        await _send_whole(send, 502, b"git http-backend gave no valid reply\n")
        return
    status, headers = _parse_headers(head)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if body:
        await send({"type": "http.response.body", "body": body, "more_body": True})
    async for chunk in stdout:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def _split_headers(buffer: bytes) -> tuple[bytes | None, bytes]:
    ends = [(buffer.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n") if sep in buffer]
    if not ends:
        return None, b""
    index, sep = min(ends)
    return buffer[:index], buffer[index + len(sep) :]


def _parse_headers(head: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    status = 200
    headers: list[tuple[bytes, bytes]] = []
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name, value = name.strip().lower(), value.strip()
        if name == b"status":
            status = int(value.split(b" ", 1)[0] or b"200")
        else:
            headers.append((name, value))
    return status, headers


async def _send_whole(send: Send, status: int, body: bytes) -> None:
    headers: list[Any] = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
