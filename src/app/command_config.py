"""What a :class:`~codeyard.app.command_service.CommandService` is configured with."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from codeyard.domain.errors import InvalidInput
from codeyard.domain.streams import COMMANDS_STREAM, DEAD_LETTER_STREAM


def default_consumer_name() -> str:
    """Unique per process on one host; hosts are told apart by name."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class CommandServiceConfig:
    stream: str = COMMANDS_STREAM
    dead_letter_stream: str = DEAD_LETTER_STREAM
    group: str = "codeyard-managers"
    consumer: str = field(default_factory=default_consumer_name)
    batch: int = 10
    block_s: float = 1.0
    #: An entry pending this long on a consumer that went silent is taken over. A live
    #: consumer keeps the entries it handles alive every ``min_idle_s / 3``, so a slow
    #: handler run is never taken over; this bounds how long a dead one's entries wait.
    min_idle_s: float = 60.0
    reclaim_interval_s: float = 5.0
    #: More deliveries than this make an entry poison: dead-lettered, never run again.
    max_deliveries: int = 5
    #: Back-off after a transport failure (Redis down) before trying again.
    retry_s: float = 1.0
    #: Entries handled at once by this process.
    concurrency: int = 16
    #: A command its handler wants forwarded more often than this gets a ForwardLoop reply.
    max_forwards: int = 3
    #: Seconds between trims of ACKed entries off the command stream; 0 disables trimming.
    trim_interval_s: float = 30.0
    #: Dead letters kept (approximate trimming); ``None``: unbounded.
    dead_letter_maxlen: int | None = 10_000
    #: How long a command whose handler fails because a backing store (Postgres, Redis) is
    #: down is retried before it is answered ``service_unavailable``; 0: answered at once.
    #: Never longer than ``min_idle_s / 2`` (see :mod:`codeyard.app.command_retry`).
    store_outage_s: float = 60.0

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_forwards < 0:
            raise InvalidInput(
                "concurrency must be >= 1 and max_forwards >= 0",
                concurrency=self.concurrency,
                max_forwards=self.max_forwards,
            )
        if self.trim_interval_s < 0 or (
            self.dead_letter_maxlen is not None and self.dead_letter_maxlen < 1
        ):
            raise InvalidInput(
                "trim_interval_s must be >= 0 and dead_letter_maxlen >= 1",
                trim_interval_s=self.trim_interval_s,
                dead_letter_maxlen=self.dead_letter_maxlen,
            )
        if self.store_outage_s < 0:
            raise InvalidInput("store_outage_s must be >= 0", store_outage_s=self.store_outage_s)
