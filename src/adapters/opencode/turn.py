"""One turn against a running server: subscribe, prompt, follow the events, stop cleanly.

:meth:`Turn.run` yields the turn's :class:`Parsed` payloads (the agent stamps them) until
the session's idle gives the turn's result (:attr:`EventMapper.result`), or a watchdog
stops it (:attr:`Turn.stop`): cancel request, idle timeout (no event of this session for
``idle_timeout_s``: OpenCode's event stream can stall, anomalyco/opencode #38458; its
heartbeats do not count), hard deadline, or the server gone.

Waiting follows the run loop's rule (``codeyard.adapters.cli.pump``): no task group stays
open across a ``yield``; each wait races one read of the stream against the cancel event
and the next deadline in a short task group. A read that loses the race is cancelled, and
httpx then closes that connection: the stream is only ever given up when the turn is
being stopped or the stream failed anyway.

Reconnect: when the stream ends or fails mid-turn, the turn subscribes again (at most
``max_reconnects`` times, with back-off), sending ``Last-Event-ID`` with the newest
event id seen. OpenCode 1.18 sends no SSE ``id:`` fields and does not replay missed
events, so the id is only a courtesy (the JSON's ``evt_`` id is used); what was missed is
recovered by reconciling instead: the session's messages are fetched and replayed through
the mapper (it emits each part once, so nothing is doubled), and if the session is no
longer busy and its answer is complete, the turn ends as if the idle event had come.

Stopping: ``POST /session/{id}/abort`` (measured: idle within 0.1 s, tool processes
killed), then ``GET /session/status`` is polled up to ``stop_grace_s``; a session that
does not go idle gets its server killed (:attr:`Turn.killed`, process group and all).
On consumer cancellation the same happens shielded, then the cancellation propagates.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio

from codeyard.adapters.cli.outcome import CANCEL_REQUESTED, HARD_DEADLINE, IDLE_TIMEOUT, Stop
from codeyard.adapters.cli.types import Parsed
from codeyard.adapters.opencode.config import OpencodeConfig
from codeyard.adapters.opencode.events import EventMapper, replay_messages, synthetic_event
from codeyard.adapters.opencode.server import OpencodeServer
from codeyard.adapters.opencode.sse import EventStream, SseEvent
from codeyard.domain.agent import AgentRequest, ResultStatus
from codeyard.domain.errors import AgentFailed, CodeyardError
from codeyard.domain.events import ErrorPayload, RawPayload

T = TypeVar("T")


async def guarded(
    call: Callable[[], Awaitable[T]], cancel: anyio.Event, deadline: float
) -> tuple[T | None, Stop | None]:
    """``call()`` raced against the cancel event and the deadline: its value, or why it
    did not give one (cancel request, deadline, or the typed error it raised)."""
    result: list[T] = []
    stop: Stop | None = None
    with anyio.move_on_after(max(deadline - anyio.current_time(), 0)):
        async with anyio.create_task_group() as tg:

            async def work() -> None:
                nonlocal stop
                try:
                    result.append(await call())
                except CodeyardError as exc:
                    stop = Stop(ResultStatus.ERROR, exc.code, str(exc))
                tg.cancel_scope.cancel()

            async def watch_cancel() -> None:
                nonlocal stop
                await cancel.wait()
                stop = CANCEL_REQUESTED
                tg.cancel_scope.cancel()

            tg.start_soon(work)
            tg.start_soon(watch_cancel)
    if result:
        return result[0], None
    return None, stop or HARD_DEADLINE


@dataclass
class _Got:
    events: list[SseEvent] = field(default_factory=list)
    ended: bool = False
    cancel: bool = False


class Turn:
    def __init__(
        self,
        server: OpencodeServer,
        request: AgentRequest,
        config: OpencodeConfig,
        *,
        session_id: str,
        prompt_id: str,
        directory: str,
        cancel: anyio.Event,
        deadline: float,
    ) -> None:
        self._server, self._api = server, server.api
        self._request, self._config = request, config
        self._session, self._directory = session_id, directory
        self._cancel, self._deadline = cancel, deadline
        self.mapper = EventMapper(session_id, prompt_id)
        self.stop: Stop | None = None
        self.killed = False
        self._settled = False

    async def run(self, body: dict[str, Any]) -> AsyncGenerator[Parsed, None]:
        stream: EventStream | None = None
        try:
            stream = await self._guarded(self._subscribe)
            if stream is not None and await self._guarded(lambda: self._prompt(body)):
                async for parsed in self._follow(stream):
                    yield parsed
            if self.stop is not None and self.mapper.result is None:
                await self._settle()
        finally:
            if stream is not None:
                await stream.aclose()
            if self.mapper.result is None and not self._settled:
                await self._settle()  # consumer cancellation or aclose: stop the session

    # --- phases ----------------------------------------------------------------------------

    async def _guarded(self, call: Callable[[], Awaitable[T]]) -> T | None:
        value, stop = await guarded(call, self._cancel, self._deadline)
        self.stop = self.stop or stop
        return value

    async def _prompt(self, body: dict[str, Any]) -> bool:
        await self._api.prompt(self._session, self._directory, body)
        return True

    async def _subscribe(self) -> EventStream:
        """Open ``/event`` and wait for ``server.connected``: events published before the
        subscription is live would be lost, so nothing is prompted before it."""
        last_id = self.mapper.last_event_id
        response = await self._api.open_events(self._directory, last_id)
        stream = EventStream(response, self._config.max_event_bytes)
        with anyio.move_on_after(self._config.request_timeout_s):
            while (events := await stream.read()) is not None:
                for index, event in enumerate(events):
                    if '"server.connected"' in event.data:
                        stream.pending = events[index + 1 :]
                        return stream
        await stream.aclose()
        raise AgentFailed("opencode's event stream did not confirm the subscription")

    async def _resubscribe(self) -> EventStream:
        """Subscribe again after the stream dropped, with back-off between attempts."""
        attempts = max(self._config.max_reconnects, 1)
        for attempt in range(attempts):
            try:
                return await self._subscribe()
            except CodeyardError:
                if not self._server.alive or attempt == attempts - 1:
                    raise
            await anyio.sleep(0.1 * 2**attempt)
        raise AgentFailed("opencode's event stream could not be reopened")

    async def _follow(self, stream: EventStream | None) -> AsyncGenerator[Parsed, None]:
        idle_s = self._request.idle_timeout_s
        idle_at = anyio.current_time() + idle_s
        while self.mapper.result is None and self.stop is None:
            if stream is None:
                if not self._server.alive:
                    self.stop = self._server_lost()
                    return
                # Bounded by the idle timeout too: a server that accepts connections but
                # never answers must not hold the turn until the hard deadline.
                until = min(self._deadline, idle_at)
                stream, stop = await guarded(self._resubscribe, self._cancel, until)
                if stream is None:
                    if not self._server.alive:
                        self.stop = self._server_lost()
                    elif stop is HARD_DEADLINE and until < self._deadline:
                        self.stop = IDLE_TIMEOUT
                    else:
                        self.stop = stop
                    return
                for parsed in await self._reconcile():
                    yield parsed
                continue
            got = await self._wait(stream, min(self._deadline, idle_at))
            activity = self.mapper.activity
            for event in got.events:
                for parsed in self._take(event):
                    yield parsed
            if self.mapper.activity != activity:
                idle_at = anyio.current_time() + idle_s
            await self._answer_asks()
            now = anyio.current_time()
            if self.mapper.result is not None:
                return
            if got.cancel:
                self.stop = CANCEL_REQUESTED
            elif now >= self._deadline:
                self.stop = HARD_DEADLINE
            elif now >= idle_at:
                self.stop = IDLE_TIMEOUT
            elif got.ended:
                await stream.aclose()
                stream = None

    async def _wait(self, stream: EventStream, until: float) -> _Got:
        got = _Got()
        async with anyio.create_task_group() as tg:

            async def read() -> None:
                events = await stream.read()
                got.ended = events is None
                got.events = events or []
                tg.cancel_scope.cancel()

            async def watch_cancel() -> None:
                await self._cancel.wait()
                got.cancel = True
                tg.cancel_scope.cancel()

            async def timer() -> None:
                await anyio.sleep_until(until)
                tg.cancel_scope.cancel()

            tg.start_soon(read)
            tg.start_soon(watch_cancel)
            tg.start_soon(timer)
        return got

    def _take(self, event: SseEvent) -> list[Parsed]:
        data = self._server.redactor.redact(event.data)
        if event.truncated:
            return [Parsed(RawPayload(reason="line_too_long"), raw=data[:4096])]
        return self.mapper.feed(data)

    async def _answer_asks(self) -> None:
        while self.mapper.asks:
            kind, ask_id = self.mapper.asks.pop(0)
            # If this fails, the idle timeout still bounds a turn waiting for an answer.
            with contextlib.suppress(CodeyardError):
                await self._api.reject(kind, ask_id, self._directory)

    async def _reconcile(self) -> list[Parsed]:
        """Replay what the stream may have missed (see the module docstring)."""
        try:
            busy = await self._api.busy(self._session, self._directory)
            messages = await self._api.messages(self._session, self._directory)
        except CodeyardError as exc:
            return [Parsed(ErrorPayload(message=f"reconcile failed: {exc}", code="reconnect"))]
        out, complete = replay_messages(self.mapper, messages)
        if not busy and complete:
            out += self.mapper.feed_event(synthetic_event("session.idle", self._session))
        return out

    async def _settle(self) -> None:
        """Abort the session and wait for it to go idle; else kill the server. Shielded."""
        self._settled = True
        grace = self._config.stop_grace_s
        idle = False
        with anyio.CancelScope(shield=True), anyio.move_on_after(grace + 1.0):
            try:
                await self._api.abort(self._session, self._directory)
                with anyio.move_on_after(grace):
                    # Polled: the event stream is gone by now (its read lost the race).
                    while not idle:
                        idle = not await self._api.busy(self._session, self._directory)
                        await anyio.sleep(0 if idle else 0.05)
            except CodeyardError:
                idle = False
        if not idle:
            self.killed = True
            await self._server.aclose(self._config.close_deadline_s)

    def _server_lost(self) -> Stop:
        code = self._server.handle.returncode
        tail = self._server.log_tail(10)
        how = f"exited with code {code}" if code is not None else "stopped answering"
        detail = f"; server log tail:\n{tail}" if tail else ""
        return Stop(ResultStatus.ERROR, "server_lost", f"the opencode server {how}{detail}")
