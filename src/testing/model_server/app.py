"""The ASGI application: routes, request recording, turn selection, timing of frames."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from codeyard.testing.model_server.anthropic import Anthropic
from codeyard.testing.model_server.base import Dialect, Frame, Pause, Plan, collect, opening
from codeyard.testing.model_server.gemini import Gemini
from codeyard.testing.model_server.openai_chat import OpenAIChat
from codeyard.testing.model_server.openai_responses import OpenAIResponses
from codeyard.testing.model_server.recording import RecordedRequest, decode_body
from codeyard.testing.model_server.router import Script, resolve
from codeyard.testing.model_server.scenario import HttpError, Scenario

ANTHROPIC, CHAT, RESPONSES, GEMINI = Anthropic(), OpenAIChat(), OpenAIResponses(), Gemini()
DEFAULT_MODEL = "mock-model"
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@dataclass
class ServerState:
    """Shared by the app and :class:`~.server.ModelServer`."""

    #: One scenario, or a :class:`~.router.Router` choosing one per conversation.
    scenario: Script
    requests: list[RecordedRequest]
    closing: anyio.Event


class ModelApp:
    """Builds the Starlette app over one :class:`ServerState`."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def build(self) -> Starlette:
        post = ["POST"]
        routes = [
            Route("/health", self.health, methods=["GET"]),
            # Claude Code's connectivity probe when non-essential traffic is allowed.
            Route("/api/hello", self.health, methods=["GET", "HEAD"]),
            Route("/v1/messages", self.anthropic_messages, methods=post),
            Route("/v1/messages/count_tokens", self.anthropic_count, methods=post),
            # OpenAI clients append paths to a base URL that may or may not end in /v1.
            Route("/v1/chat/completions", self.chat, methods=post),
            Route("/chat/completions", self.chat, methods=post),
            Route("/v1/responses", self.responses, methods=post),
            Route("/responses", self.responses, methods=post),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/models", self.models, methods=["GET"]),
            Route("/v1beta/models", self.gemini_models, methods=["GET"]),
            Route("/v1beta/models/{target}", self.gemini, methods=post),
            Route("/v1/models/{target}", self.gemini, methods=post),
            Route("/{rest:path}", self.not_found, methods=_ALL_METHODS),
        ]
        return Starlette(routes=routes)

    # --- recording -----------------------------------------------------------------------

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        record = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=request.url.query,
            headers=dict(request.headers),
            raw_body=raw,
            body=decode_body(raw, request.headers.get("content-encoding")),
        )
        record.extra["time"] = time.time()
        self.state.requests.append(record)
        return record

    def _scenario(self, record: RecordedRequest, dialect: str) -> Scenario:
        """The scenario answering ``record`` (a router's choice is kept in ``extra``)."""
        scenario, marker = resolve(self.state.scenario, dialect, record.body or {})
        if marker is not None:
            record.extra["route"] = marker
        return scenario

    def _json(self, record: RecordedRequest, data: Any, status: int = 200, **kw: Any) -> Response:
        record.status = status
        record.outcome = "completed"
        return JSONResponse(data, status_code=status, **kw)

    # --- plain endpoints -----------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return self._json(await self._record(request), {"status": "ok"})

    async def not_found(self, request: Request) -> Response:
        record = await self._record(request)
        return self._json(record, {"error": f"no such endpoint: {request.url.path}"}, 404)

    async def models(self, request: Request) -> Response:
        record = await self._record(request)
        # Same path, two shapes: Anthropic clients identify themselves by header.
        if "anthropic-version" in request.headers:
            data: dict[str, Any] = {
                "data": [
                    {
                        "type": "model",
                        "id": DEFAULT_MODEL,
                        "display_name": "Mock Model",
                        "created_at": "2025-01-01T00:00:00Z",
                    }
                ],
                "has_more": False,
                "first_id": DEFAULT_MODEL,
                "last_id": DEFAULT_MODEL,
            }
        else:
            model = {"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "codeyard"}
            data = {"object": "list", "data": [model]}
        return self._json(record, data)

    async def gemini_models(self, request: Request) -> Response:
        record = await self._record(request)
        model = {
            "name": f"models/{DEFAULT_MODEL}",
            "displayName": "Mock Model",
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
        }
        return self._json(record, {"models": [model]})

    async def anthropic_count(self, request: Request) -> Response:
        record = await self._record(request)
        record.dialect = ANTHROPIC.name
        usage = self._scenario(record, ANTHROPIC.name).usage
        return self._json(record, {"input_tokens": usage.input_tokens})

    # --- model endpoints -----------------------------------------------------------------

    async def anthropic_messages(self, request: Request) -> Response:
        return await self._model_call(await self._record(request), ANTHROPIC, stream=None)

    async def chat(self, request: Request) -> Response:
        return await self._model_call(await self._record(request), CHAT, stream=None)

    async def responses(self, request: Request) -> Response:
        return await self._model_call(await self._record(request), RESPONSES, stream=None)

    async def gemini(self, request: Request) -> Response:
        record = await self._record(request)
        model, _, action = str(request.path_params["target"]).rpartition(":")
        record.dialect = GEMINI.name
        if action == "streamGenerateContent":
            return await self._model_call(record, GEMINI, stream=True, model=model)
        if action == "generateContent":
            return await self._model_call(record, GEMINI, stream=False, model=model)
        if action == "countTokens":
            usage = self._scenario(record, GEMINI.name).usage
            return self._json(record, {"totalTokens": usage.input_tokens})
        body = GEMINI.error_body(404, f"unknown method {action!r}")
        return self._json(record, body, 404)

    async def _model_call(
        self,
        record: RecordedRequest,
        dialect: Dialect,
        *,
        stream: bool | None,
        model: str | None = None,
    ) -> Response:
        """Answer one model request: ``stream=None`` means the body's ``stream`` flag."""
        record.dialect = dialect.name
        body = record.body
        if body is None:
            return self._json(record, dialect.error_body(400, "body is not a JSON object"), 400)
        record.stream = bool(body.get("stream")) if stream is None else stream
        scenario = self._scenario(record, dialect.name)
        side = (
            scenario.is_side(dialect.name, body)
            if scenario.is_side is not None
            else dialect.is_side_request(body)
        )
        selection = scenario.select(model_turns=dialect.model_turns(body), side=side)
        record.kind, record.turn = selection.kind, selection.index
        plan = Plan(selection, model or str(body.get("model") or DEFAULT_MODEL), scenario.usage)

        start = opening(plan.steps)
        if not record.stream:
            flat = collect(plan, "")
            await self._pause(Pause(flat.pause, stall=True))
            if flat.error is not None:
                return self._error(record, dialect, flat.error)
            return self._json(record, dialect.complete(plan))
        # Leading delays hold back the response headers: a slow model, not a slow stream.
        await self._pause(Pause(start.delay))
        if start.error is not None:
            return self._error(record, dialect, start.error)
        record.status = 200
        frames = self._timed(record, dialect.writer(plan).play(start.start))
        return StreamingResponse(
            frames, media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    def _error(self, record: RecordedRequest, dialect: Dialect, error: HttpError) -> Response:
        body = error.body or dialect.error_body(error.status, error.message)
        return self._json(record, body, error.status, headers=dict(error.headers))

    async def _pause(self, pause: Pause) -> bool:
        """Sleep; ``False`` when a stall was cut short because the server is stopping."""
        if pause.seconds <= 0:
            return True
        if not pause.stall:
            await anyio.sleep(pause.seconds)
            return True
        with anyio.move_on_after(pause.seconds):
            await self.state.closing.wait()
            return False
        return True

    async def _timed(
        self, record: RecordedRequest, frames: Iterator[Frame]
    ) -> AsyncIterator[bytes]:
        try:
            for frame in frames:
                if isinstance(frame, Pause):
                    if not await self._pause(frame):
                        record.outcome = "aborted"
                        return
                else:
                    yield frame
        except anyio.get_cancelled_exc_class():
            # Starlette cancels the body when the client disconnects.
            record.outcome = "disconnected"
            raise
        record.outcome = "completed"
