"""Messages on the control plane's streams (Redis streams in production) and key names."""

from __future__ import annotations

from pydantic import Field, NonNegativeInt

from codeyard.domain.base import DomainModel

COMMANDS_STREAM = "worker:commands"
DEAD_LETTER_STREAM = "worker:commands:dead"


def worker_input_stream(worker_id: str) -> str:
    return f"worker:{worker_id}:input"


def worker_output_stream(worker_id: str) -> str:
    return f"worker:{worker_id}:output"


def response_stream(request_id: str) -> str:
    return f"worker:responses:{request_id}"


def standby_stream(slot: str) -> str:
    """Where a standby worker container waits for its :class:`WorkerAssignment`."""
    return f"worker:standby:{slot}"


def owner_commands_stream(owner: str) -> str:
    """Commands forwarded to the manager ``owner`` (the one whose engine runs the worker)."""
    return f"{COMMANDS_STREAM}:owner:{owner}"


class StreamMessage(DomainModel):
    """One stream entry. ``id`` is ``<ms>-<seq>`` as Redis assigns it, ordered per stream."""

    stream: str
    id: str
    fields: dict[str, str]
    #: How many times this entry has been delivered to a consumer group (1 = first time).
    deliveries: NonNegativeInt = 0


def parse_stream_id(entry_id: str) -> tuple[int, int]:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``; raises ``ValueError`` on bad input."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class PendingPage(DomainModel):
    """A page of entries reclaimed from idle consumers, with the cursor for the next page."""

    cursor: str = "0-0"
    messages: tuple[StreamMessage, ...] = ()
    deleted_ids: tuple[str, ...] = Field(default=())
