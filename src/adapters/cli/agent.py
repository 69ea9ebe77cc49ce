"""CliCodeAgent: the CodeAgent port for any CLI provider, over any ProcessLauncher."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from pathlib import Path, PurePosixPath

import anyio

from codeyard.adapters.cli.runner import DEFAULT_LIMITS, RunLimits, run_cli
from codeyard.adapters.cli.types import ProviderSpec
from codeyard.adapters.process.local import LocalProcessLauncher
from codeyard.domain.agent import AgentCapabilities, AgentRequest
from codeyard.domain.errors import AlreadyExists, UnsupportedProvider
from codeyard.domain.events import AgentEvent
from codeyard.ports.process_launcher import ProcessLauncher


class CliCodeAgent:
    """:class:`~codeyard.ports.code_agent.CodeAgent` running ``spec``'s real CLI.

    ``home`` is the CLI's private HOME for every turn: a persistent per-worker directory
    (CLIs store their sessions there, so resume needs the same HOME as the first turn).
    ``cli_home`` is that directory as the CLI sees it when the launcher runs it elsewhere
    (a worker container with ``home`` mounted); it defaults to ``home``.

    ``execute`` checks, before any event: ``request.provider == spec.name`` (else
    ``UnsupportedProvider``), ``spec.check(request)`` (``ResumeUnsupported``...), that no
    run with the same request id is going on (``AlreadyExists``). Then it is
    :func:`~codeyard.adapters.cli.runner.run_cli`, whose docstring is the full contract
    (timeouts, interrupt escalation, the one final result, secret redaction).

    ``cancel(request_id)`` asks that run to stop (interrupt steps, then SIGKILL; it ends
    with a ``cancelled`` result); idempotent, a no-op for unknown or finished ids.
    Concurrent runs are independent, but they share ``home``: run one turn at a time per
    agent when the CLI cannot share its state directory (most cannot).
    """

    def __init__(
        self,
        spec: ProviderSpec,
        launcher: ProcessLauncher,
        home: Path,
        *,
        cli_home: PurePosixPath | None = None,
        limits: RunLimits = DEFAULT_LIMITS,
    ) -> None:
        self._spec = spec
        self._launcher = launcher
        self._home = home
        self._cli_home = cli_home
        self._limits = limits
        self._runs: dict[str, anyio.Event] = {}

    @property
    def provider(self) -> str:
        return self._spec.name

    @property
    def home(self) -> Path:
        return self._home

    @property
    def running(self) -> frozenset[str]:
        """Request ids whose run has started and not finished (diagnostics and tests)."""
        return frozenset(self._runs)

    def capabilities(self) -> AgentCapabilities:
        return self._spec.capabilities()

    async def cancel(self, request_id: str) -> None:
        event = self._runs.get(request_id)
        if event is not None:
            event.set()

    async def execute(self, request: AgentRequest) -> AsyncGenerator[AgentEvent, None]:
        if request.provider != self._spec.name:
            raise UnsupportedProvider(
                "request is for another provider",
                requested=request.provider,
                adapter=self._spec.name,
            )
        self._spec.check(request)
        if request.id in self._runs:
            raise AlreadyExists("a run with this request id is running", request_id=request.id)
        cancel = anyio.Event()
        self._runs[request.id] = cancel
        try:
            events = run_cli(
                self._spec,
                request,
                launcher=self._launcher,
                home=self._home,
                cli_home=self._cli_home,
                cancel=cancel,
                limits=self._limits,
            )
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
        finally:
            # Only forget our own entry (a finished run must not drop a newer one).
            if self._runs.get(request.id) is cancel:
                del self._runs[request.id]


def local_agent(
    spec: ProviderSpec, home: Path, *, limits: RunLimits = DEFAULT_LIMITS
) -> CliCodeAgent:
    """A :class:`CliCodeAgent` running the CLI as a local subprocess."""
    return CliCodeAgent(spec, LocalProcessLauncher(), home, limits=limits)
