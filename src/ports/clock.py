"""Clock: where time comes from, so fakes and tests can control it."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """``now`` returns an aware UTC datetime that never goes backwards within a process."""

    def now(self) -> datetime:
        """The current time (UTC, timezone-aware)."""
        ...
