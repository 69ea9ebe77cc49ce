"""OpencodeCodeAgent: the CodeAgent port for OpenCode, driving ``opencode serve`` over HTTP.

Unlike the other providers, OpenCode is not run once per turn: one server per agent (one
agent per worker) is started lazily through the ``ProcessLauncher`` and kept across turns,
with a persistent private HOME (its sessions live there, which is what makes resume
work). Each turn is: (re)start the server if it is gone or no longer matches the request
(model, endpoint, environment: the config is server-wide), create a session (or look the
requested one up), subscribe to the event stream, prompt, follow the events
(:mod:`.turn`), and end with exactly one result event.

Events of a run, in order: a ``lifecycle`` ``server_starting`` when a server has to be
started first (so a caller sees progress within milliseconds, not after the ~2-11 s
start); an ``init`` with the session id, model and directory; the turn's payloads; the
``result``. Secrets (the server password, API keys) are redacted from every event.

Result rules (shared with the stdout runner through
:class:`~codeyard.adapters.cli.outcome.Tally`): the session's idle gives the turn's own
result (success, error or cancelled: see :mod:`.events`); a cancel request, the idle
timeout or the hard deadline give cancelled/timeout after the session was aborted; a
server that cannot start or dies gives an error with the tail of its log.

Requests are checked before any event: another provider (``UnsupportedProvider``), a
blank or malformed ``allowed_commands`` entry (``InvalidInput``), a request id already
running (``AlreadyExists``), a session that another run of this agent is working on, or a
server restart that would pull the server from under other runs (``Conflict``). An unknown
``session_id`` is not an error: the server cannot resume what it never had (its HOME is
per worker), so a new session is started and an ``error`` event ``session_not_found``
says so; the result carries the new id.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path, PurePosixPath
from typing import Protocol

import anyio

from codeyard.adapters.cli.outcome import Stop
from codeyard.adapters.opencode._emit import Emitter
from codeyard.adapters.opencode.config import (
    OpencodeConfig,
    permission_rules,
    permission_update,
    prompt_body,
    server_setup,
)
from codeyard.adapters.opencode.events import PROVIDER, new_message_id
from codeyard.adapters.opencode.server import OpencodeServer, start_server
from codeyard.adapters.opencode.turn import Turn, guarded
from codeyard.domain.agent import AgentCapabilities, AgentRequest
from codeyard.domain.errors import (
    AlreadyExists,
    Conflict,
    InvalidInput,
    UnsupportedProvider,
)
from codeyard.domain.events import (
    AgentEvent,
    ErrorPayload,
    EventPayload,
    InitPayload,
    LifecyclePayload,
    ResultPayload,
)
from codeyard.ports.process_launcher import ProcessLauncher

_FORBIDDEN_IN_COMMAND = frozenset("\n\r\x00*")


class OpencodeCodeAgent:
    """:class:`~codeyard.ports.code_agent.CodeAgent` for OpenCode (see the module doc).

    ``home`` is the server's private, persistent HOME on this machine (config written
    there, sessions stored there); ``cli_home`` is the same directory as the server sees
    it when the launcher runs it elsewhere (a worker container with ``home`` mounted).
    ``aclose()`` stops the server (a later ``execute`` would start a new one).
    """

    def __init__(
        self,
        launcher: ProcessLauncher,
        home: Path,
        *,
        config: OpencodeConfig | None = None,
        cli_home: PurePosixPath | None = None,
    ) -> None:
        self._launcher = launcher
        self._home = home
        self._cli_home = cli_home or PurePosixPath(home)
        self._config = config or OpencodeConfig()
        self._server: OpencodeServer | None = None
        self._start_lock = anyio.Lock()
        self._runs: dict[str, anyio.Event] = {}
        self._busy_sessions: set[str] = set()

    @property
    def provider(self) -> str:
        return PROVIDER

    @property
    def running(self) -> frozenset[str]:
        """Request ids whose run has started and not finished."""
        return frozenset(self._runs)

    @property
    def server(self) -> OpencodeServer | None:
        """The running server, if any (diagnostics and tests)."""
        return self._server if self._server is not None and self._server.alive else None

    def capabilities(self) -> AgentCapabilities:
        return AgentCapabilities(
            resume=True,
            interrupt=True,
            streaming_deltas=True,
            reports_cost=True,
            max_turns=False,
        )

    async def cancel(self, request_id: str) -> None:
        event = self._runs.get(request_id)
        if event is not None:
            event.set()

    async def aclose(self) -> None:
        """Stop the server and its whole process group (shielded, bounded)."""
        server, self._server = self._server, None
        if server is not None:
            await server.aclose(self._config.close_deadline_s)

    async def execute(self, request: AgentRequest) -> AsyncGenerator[AgentEvent, None]:
        fingerprint = self._check(request)
        cancel = anyio.Event()
        self._runs[request.id] = cancel
        if request.session_id:
            self._busy_sessions.add(request.session_id)
        out = Emitter(request)
        started = anyio.current_time()
        deadline = started + request.timeout_s
        stop: Stop | None = None
        turn: Turn | None = None
        session_id = request.session_id
        try:
            if self.server is None or self.server.setup.fingerprint != fingerprint:
                yield out.stamp(LifecyclePayload(state="server_starting"))
            server, stop = await guarded(lambda: self._ensure_server(request), cancel, deadline)
            if server is not None:
                out.redactor = server.redactor
                opened, stop = await guarded(lambda: self._open(server, request), cancel, deadline)
                if opened is not None:
                    session_id, directory, notice = opened
                    if notice is not None:
                        yield out.stamp(notice)
                    yield out.stamp(
                        InitPayload(session_id=session_id, model=server.setup.model, cwd=directory)
                    )
                    turn = Turn(
                        server,
                        request,
                        self._config,
                        session_id=session_id,
                        prompt_id=new_message_id(),
                        directory=directory,
                        cancel=cancel,
                        deadline=deadline,
                    )
                    async for parsed in turn.run(
                        prompt_body(request, server.setup.model, turn.mapper.prompt_id)
                    ):
                        if parsed.payload.type != "result":
                            yield out.stamp(parsed.payload, raw=parsed.raw)
                    stop = turn.stop
            result = out.tally.final(
                cli_result=turn.mapper.result if turn is not None else None,
                stop=stop,
                stopped_by=("killing the server" if turn.killed else "abort")
                if turn is not None and stop is not None
                else None,
                exit_code=None,
                session_id=session_id,
                duration_s=max(anyio.current_time() - started, 0.0),
            )
            yield out.stamp(ResultPayload(result=result))
        finally:
            self._runs.pop(request.id, None)
            self._busy_sessions.discard(session_id or "")
            if request.session_id:
                self._busy_sessions.discard(request.session_id)
            if not self._config.keep_server and not self._runs:
                await self.aclose()  # shielded inside

    # --- internals -------------------------------------------------------------------------

    def _check(self, request: AgentRequest) -> str:
        """Everything that must fail before any event; the server fingerprint wanted."""
        if request.provider != PROVIDER:
            raise UnsupportedProvider(
                "request is for another provider", requested=request.provider, adapter=PROVIDER
            )
        for command in request.allowed_commands:
            if not command.strip() or _FORBIDDEN_IN_COMMAND.intersection(command):
                raise InvalidInput(
                    "allowed_commands entries must be non-empty, one line, without '*'",
                    command=command,
                )
        if request.id in self._runs:
            raise AlreadyExists("a run with this request id is running", request_id=request.id)
        if request.session_id and request.session_id in self._busy_sessions:
            raise Conflict("another run is working on this session", session_id=request.session_id)
        wanted = server_setup(self._config, request, home=self._cli_home, port=0).fingerprint
        server = self.server
        if server is not None and server.setup.fingerprint != wanted and self._runs:
            raise Conflict(
                "the worker's opencode server runs with another model, endpoint or "
                "environment and is busy; retry when its runs ended",
                running=sorted(self._runs),
            )
        return wanted

    async def _ensure_server(self, request: AgentRequest) -> OpencodeServer:
        async with self._start_lock:
            wanted = server_setup(self._config, request, home=self._cli_home, port=0)
            server = self.server
            # A process can be alive and still not answer (or a remote handle may not know
            # it died yet): one short health poll before trusting it with a turn.
            if (
                server is not None
                and server.setup.fingerprint == wanted.fingerprint
                and await server.api.healthy(self._config.health_timeout_s)
            ):
                return server
            await self.aclose()
            self._server = await start_server(
                self._launcher,
                self._config,
                lambda port: server_setup(self._config, request, home=self._cli_home, port=port),
                home=self._home,
                cli_home=self._cli_home,
            )
            return self._server

    async def _open(
        self, server: OpencodeServer, request: AgentRequest
    ) -> tuple[str, str, EventPayload | None]:
        """``(session id, directory, notice)`` for the turn: the requested session when
        the server knows it, else a new one (and a notice saying so)."""
        directory = request.workdir or str(self._cli_home)
        rules = permission_rules(request.allowed_commands) if request.allowed_commands else []
        notice: EventPayload | None = None
        if request.session_id:
            # OpenCode ids start with "ses" (its API answers 500 to any other shape).
            known = request.session_id.startswith("ses")
            session = await server.api.get_session(request.session_id) if known else None
            if session is not None:
                if request.workdir is None and isinstance(session.get("directory"), str):
                    directory = session["directory"]
                update = permission_update(session.get("permission"), request.allowed_commands)
                if update is not None:
                    await server.api.set_permission(request.session_id, directory, update)
                return request.session_id, directory, None
            notice = ErrorPayload(
                message=f"session {request.session_id!r} is unknown to this worker's "
                "opencode server; a new session was started",
                code="session_not_found",
            )
        session_id = await server.api.create_session(directory, rules or None)
        self._busy_sessions.add(session_id)
        return session_id, directory, notice


class _ProviderContext(Protocol):
    """What the provider registry hands a factory (``codeyard.app.providers``)."""

    @property
    def launcher(self) -> ProcessLauncher: ...

    @property
    def home(self) -> Path: ...


def opencode_agent(context: _ProviderContext) -> OpencodeCodeAgent:
    """Registry factory: the agent needs its launcher and HOME, so the class itself (which
    the registry would call without arguments) cannot be the target."""
    return OpencodeCodeAgent(context.launcher, context.home)
