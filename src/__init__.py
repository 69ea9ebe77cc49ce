"""codeyard: run AI coding agents in isolated, ephemeral Docker workers.

``from codeyard import Codeyard`` is the Python API (:mod:`codeyard.app.api`). It is loaded
on first use: importing ``codeyard.domain`` or ``codeyard.ports`` must stay free of I/O
libraries.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Codeyard"]


def __getattr__(name: str) -> Any:
    if name == "Codeyard":
        from codeyard.app.api import Codeyard  # noqa: PLC0415 - lazy on purpose (module doc)

        return Codeyard
    raise AttributeError(f"module 'codeyard' has no attribute {name!r}")
