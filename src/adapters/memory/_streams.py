"""The state behind :class:`~codeyard.adapters.memory.event_bus.InMemoryEventBus`: a
stream's entries, its consumer groups and their pending entries, modelled on Redis'."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import datetime

from codeyard.domain.errors import InvalidInput
from codeyard.domain.streams import parse_stream_id

StreamId = tuple[int, int]


def fmt_id(entry_id: StreamId) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


def parse_id(entry_id: str, what: str) -> StreamId:
    try:
        ms, seq = parse_stream_id(entry_id)
    except ValueError:
        raise InvalidInput(f"invalid stream id for {what}", value=entry_id) from None
    if ms < 0 or seq < 0:
        raise InvalidInput(f"invalid stream id for {what}", value=entry_id)
    return ms, seq


def positive(value: int, what: str) -> int:
    if value < 1:
        raise InvalidInput(f"{what} must be at least 1", value=value)
    return value


@dataclass
class Pending:
    consumer: str
    deliveries: int
    delivered_at: datetime


@dataclass
class Group:
    last_delivered: StreamId
    #: Insertion order is id order: entries enter once, when first delivered, in id order.
    pending: dict[StreamId, Pending] = field(default_factory=dict)


@dataclass
class Stream:
    #: Entries in id order.
    entries: list[tuple[StreamId, dict[str, str]]] = field(default_factory=list)
    #: The last id ever assigned (kept after trimming, as Redis does).
    last_id: StreamId = (0, 0)
    groups: dict[str, Group] = field(default_factory=dict)

    def index_after(self, after: StreamId) -> int:
        """Position of the first entry with id > ``after``."""
        return bisect_right(self.entries, after, key=entry_id_of)

    def get(self, entry_id: StreamId) -> dict[str, str] | None:
        i = bisect_left(self.entries, entry_id, key=entry_id_of)
        if i < len(self.entries) and self.entries[i][0] == entry_id:
            return self.entries[i][1]
        return None


def done_below(cg: Group) -> StreamId:
    """The group is done with every entry below this id (the PEL is in id order)."""
    after_delivered = (cg.last_delivered[0], cg.last_delivered[1] + 1)
    return min(next(iter(cg.pending), after_delivered), after_delivered)


def entry_id_of(entry: tuple[StreamId, dict[str, str]]) -> StreamId:
    return entry[0]
