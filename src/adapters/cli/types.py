"""The seams between a provider adapter and the shared run loop.

A provider (claude, codex, gemini, droid...) contributes three things:

- a :class:`CliInvocation`: argv, the complete environment, cwd, the config files to write
  into the run's private HOME, and how to interrupt the CLI cleanly;
- a :class:`LineParser` per run: one stdout line in, zero or more :class:`Parsed` payloads
  out (the provider's own ``result`` line becomes a ``ResultPayload``);
- a :class:`ProviderSpec` tying them together with the capabilities and request checks.

The run loop (``codeyard.adapters.cli.runner``) owns everything else: process start via a
``ProcessLauncher``, line splitting, secret redaction, idle timeout and hard deadline,
interrupt escalation, and the synthesized final result when the CLI gave none.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Protocol

from codeyard.domain.agent import AgentCapabilities, AgentRequest
from codeyard.domain.events import EventPayload


@dataclass(frozen=True)
class Parsed:
    """One normalized payload and the provider line it came from (kept verbatim)."""

    payload: EventPayload
    raw: str | None = None


@dataclass(frozen=True)
class InterruptStep:
    """Send ``signum`` to the process group, then wait up to ``grace_s`` for it to exit."""

    signum: int
    grace_s: float


#: The default escalation: the CLI's clean interrupt, then TERM, then KILL.
DEFAULT_INTERRUPT: tuple[InterruptStep, ...] = (
    InterruptStep(signal.SIGINT, 5.0),
    InterruptStep(signal.SIGTERM, 3.0),
    InterruptStep(signal.SIGKILL, 2.0),
)


@dataclass(frozen=True)
class CliInvocation:
    """How to start one turn of a CLI.

    ``env`` is complete (nothing is inherited from the parent). ``files`` maps paths
    relative to the run's HOME to their content; the run loop writes them before starting
    (generated config, never the user's own). ``secrets`` are values redacted from every
    event and log line (API keys, tokens).
    """

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str | None = None
    files: Mapping[PurePosixPath, str] = field(default_factory=dict)
    interrupt: tuple[InterruptStep, ...] = DEFAULT_INTERRUPT
    secrets: tuple[str, ...] = ()


class LineParser(Protocol):
    """Stateful, per run. Never raises on bad input: an unrecognized or malformed line
    becomes a ``RawPayload`` (or ``ErrorPayload``) carrying the line in ``raw``."""

    def feed(self, line: str) -> list[Parsed]:
        """Normalize one complete stdout line (without its newline)."""
        ...

    @property
    def session_id(self) -> str | None:
        """The provider session id learned so far (for resume and synthesized results)."""
        ...


class ProviderSpec(Protocol):
    """What a CLI provider tells the shared machinery."""

    @property
    def name(self) -> str:
        """Provider name as requests spell it (``"claude"``)."""
        ...

    def capabilities(self) -> AgentCapabilities:
        """Static capabilities."""
        ...

    def check(self, request: AgentRequest) -> None:
        """Raise a typed error (``ResumeUnsupported``, ``InvalidInput``...) before anything
        starts when this provider cannot serve ``request``."""
        ...

    def invocation(self, request: AgentRequest, *, home: PurePosixPath) -> CliInvocation:
        """argv/env/files for one turn, with ``home`` as the CLI's private HOME."""
        ...

    def new_parser(self, request: AgentRequest) -> LineParser:
        """A fresh parser for one run."""
        ...
