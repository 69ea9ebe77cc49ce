"""CodeAgent: drive one agent CLI (Claude Code, Droid, OpenCode, Codex, Gemini...)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol, runtime_checkable

from codeyard.domain.agent import AgentCapabilities, AgentRequest
from codeyard.domain.events import AgentEvent


@runtime_checkable
class CodeAgent(Protocol):
    """One provider adapter.

    Contract:
    - ``execute`` yields normalized :class:`AgentEvent` objects with ``seq`` increasing by
      one from 0, and the LAST event is always a ``result`` event (synthesized with status
      error/timeout/cancelled when the CLI gave none). Nothing is yielded after it.
    - Invalid requests raise :class:`~codeyard.domain.errors.InvalidInput` before any event;
      a resume the provider cannot do raises ``ResumeUnsupported``. Failures of the CLI or
      model during the run are reported as events, not raised.
    - Cancellation of the consuming task (anyio cancel scope) stops the CLI process group
      within the adapter's shutdown deadline and re-raises the cancellation; no process is
      left behind.
    """

    @property
    def provider(self) -> str:
        """The provider name requests use to select this adapter (e.g. ``"claude"``)."""
        ...

    def capabilities(self) -> AgentCapabilities:
        """What this adapter supports; pure, no I/O."""
        ...

    def execute(self, request: AgentRequest) -> AsyncGenerator[AgentEvent, None]:
        """Run one turn. See the class contract for ordering and termination.

        An async generator, so consumers can ``aclose`` it (``contextlib.aclosing``) and
        the adapter's cleanup runs when they stop early, not whenever it is collected.
        """
        ...

    async def cancel(self, request_id: str) -> None:
        """Ask the run started for ``request_id`` to stop.

        Idempotent; an unknown or finished id is a no-op. The run's iterator then ends with
        a ``result`` event of status ``cancelled``.
        """
        ...
