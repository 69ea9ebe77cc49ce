"""Shared machinery of the CLI-driven agent adapters: line parsing protocol, invocation
description, the watchdog-guarded run loop, secret redaction.

Providers implement :class:`ProviderSpec` (see ``types``); :class:`CliCodeAgent` turns any
spec into a ``CodeAgent`` over any ``ProcessLauncher``.
"""

from codeyard.adapters.cli.agent import CliCodeAgent, local_agent
from codeyard.adapters.cli.lines import DEFAULT_MAX_LINE_BYTES, Line, LineSplitter, split_lines
from codeyard.adapters.cli.redact import REDACTED, Redactor
from codeyard.adapters.cli.runner import DEFAULT_LIMITS, RunLimits, run_cli
from codeyard.adapters.cli.types import (
    DEFAULT_INTERRUPT,
    CliInvocation,
    InterruptStep,
    LineParser,
    Parsed,
    ProviderSpec,
)

__all__ = [
    "DEFAULT_INTERRUPT",
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_LINE_BYTES",
    "REDACTED",
    "CliCodeAgent",
    "CliInvocation",
    "InterruptStep",
    "Line",
    "LineParser",
    "LineSplitter",
    "Parsed",
    "ProviderSpec",
    "Redactor",
    "RunLimits",
    "local_agent",
    "run_cli",
    "split_lines",
]
