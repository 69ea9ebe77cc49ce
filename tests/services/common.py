"""What every service helper shares: the CI rule, free ports, process and log helpers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import uuid
from pathlib import Path
from typing import NoReturn

import pytest

SETUP_HINT = "run `scripts/dev setup` (installs the missing packages and starts dockerd)"

_FALSY = {"", "0", "false", "no", "off", "n", "f"}


class ServiceStartError(Exception):
    """A service binary exists but the service did not come up."""


def ci_enabled() -> bool:
    """True when the ``CI`` environment variable holds a truthy value."""
    return os.environ.get("CI", "").strip().lower() not in _FALSY


def service_unavailable(name: str, reason: str, fix: str = SETUP_HINT) -> NoReturn:
    """Fail (in CI) or skip (elsewhere) a test whose service is unavailable.

    The single implementation of the rule: in CI a missing service is a broken pipeline,
    never a silent skip.
    """
    message = f"{name} unavailable: {reason}. Fix: {fix}."
    if ci_enabled():
        pytest.fail(f"{message} (CI is set: failing instead of skipping)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller retries if it loses a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file ("" when unreadable)."""
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(content[-lines:])


def stop_process(proc: subprocess.Popen[bytes], sig: int, timeout: float = 10.0) -> None:
    """Send ``sig`` and wait; kill when the process outlives ``timeout``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
