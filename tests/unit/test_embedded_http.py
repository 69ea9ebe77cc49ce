"""serve_asgi: the embedded uvicorn both the forge and the scripted model server run on."""

from __future__ import annotations

import socket

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from codeyard.adapters.embedded_http import serve_asgi
from codeyard.domain.errors import ServiceUnavailable

pytestmark = pytest.mark.anyio


async def _hello(_request: object) -> PlainTextResponse:
    return PlainTextResponse("hello")


APP = Starlette(routes=[Route("/", _hello)])


async def test_serves_on_a_free_port_until_the_block_ends() -> None:
    async with serve_asgi(APP, host="127.0.0.1", service="test") as running:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"http://127.0.0.1:{running.port}/")
        assert answer.text == "hello"
    with socket.socket() as probe:  # closed: nothing listens any more
        assert probe.connect_ex(("127.0.0.1", running.port)) != 0


async def test_a_taken_port_is_a_typed_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ServiceUnavailable) as caught:
            async with serve_asgi(APP, host="127.0.0.1", port=port, service="test"):
                pass
    assert caught.value.fields["service"] == "test"
