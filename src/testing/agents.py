"""Where the pinned agent CLIs live on this machine, for integration tests and the dev box.

``scripts/install-agents`` installs each CLI with npm into its own prefix under
:func:`agents_dir`; this module only *finds* them. Keeping one prefix per provider lets
the five CLIs pin conflicting transitive dependencies without interfering.
"""

from __future__ import annotations

import os
from pathlib import Path

from codeyard.domain.agent_cli import PINNED, Pin
from codeyard.domain.errors import NotFound

INSTALL_COMMAND = "scripts/install-agents"

__all__ = ["INSTALL_COMMAND", "PINNED", "AgentBinaryMissing", "Pin", "agent_binary", "agents_dir"]


class AgentBinaryMissing(NotFound):
    """A pinned agent CLI is not installed (or not for this provider name)."""

    code = "agent_binary_missing"


def agents_dir() -> Path:
    """``$CODEYARD_AGENTS_DIR``, else ``~/.cache/codeyard/agents`` (as the script uses)."""
    configured = os.environ.get("CODEYARD_AGENTS_DIR")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "codeyard" / "agents"


def agent_binary(provider: str) -> Path:
    """The executable of ``provider``'s pinned CLI; raises :class:`AgentBinaryMissing`.

    Only existence and the executable bit are checked: the script verifies versions at
    install time, and re-checking here would cost a ``node`` start per lookup.
    """
    pin = PINNED.get(provider)
    if pin is None:
        msg = f"no pinned agent CLI for provider {provider!r}"
        raise AgentBinaryMissing(msg, provider=provider, known=sorted(PINNED))
    path = agents_dir() / provider / "node_modules" / ".bin" / pin.binary
    if not (path.is_file() and os.access(path, os.X_OK)):
        msg = (
            f"{pin.package}@{pin.version} is not installed at {path}: "
            f"run `{INSTALL_COMMAND} {provider}`"
        )
        raise AgentBinaryMissing(msg, provider=provider, path=str(path), install=INSTALL_COMMAND)
    return path
