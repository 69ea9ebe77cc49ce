"""Per-worker Redis logins back after a Redis restart.

Redis keeps ``ACL SETUSER`` users in memory only, so a restart (even with AOF) drops every
worker's login; the workers ride out the outage retrying, authentication failures
included, for ``CODEYARD_WORKER_REDIS_OUTAGE_S`` (60 s) and exit 3 after that. The
manager's :class:`~codeyard.ports.worker_credentials.WorkerCredentials` remembers what it
issued (passwords as SHA-256) and :meth:`restore` makes the lost logins again, same
passwords and keys: the workers' next retry logs in.

When: every ``watch_interval_s`` (2 s by default), not on a "connection is back" signal.
redis-py gives none (its pool reconnects silently, per command), and a poll also covers a
login lost any other way (``ACL LOAD``, a failover to a replica, a hand-made
``DELUSER``). A pass is one ``ACL USERS`` (users of every owner, a few hundred names at
most) and nothing at all while this manager has issued no login; so a login is back
within about ``watch_interval_s`` of Redis answering, far inside the workers' bound.
While a pass fails (Redis down, or the first command after a restart finding the
pooled connection dead: the manager's client retries nothing) the next comes after
``RETRY_S``: a refused connect costs nothing, and the login is back well under a second
after Redis is.
"""

from __future__ import annotations

import anyio
import structlog

from codeyard.app.observability.metrics import ManagerMetrics
from codeyard.domain.errors import CodeyardError
from codeyard.ports.worker_credentials import WorkerCredentials

log = structlog.get_logger(__name__)

#: The pause after a failed pass (at most the interval).
RETRY_S = 0.25


async def restore_logins_loop(
    logins: WorkerCredentials, *, interval_s: float, metrics: ManagerMetrics | None = None
) -> None:
    """``logins.restore()`` every ``interval_s`` (``RETRY_S`` after a failure) until
    cancelled; restores logged (a warning: Redis lost them) and counted, failures (Redis
    down) logged once per outage."""
    failing = False
    while True:
        try:
            restored = await logins.restore()
        except CodeyardError as exc:
            if not failing:
                log.warning("worker logins not checked, retrying", error=str(exc))
            failing = True
        else:
            failing = False
            if restored:
                log.warning(
                    "worker logins restored (Redis had lost them)",
                    count=len(restored),
                    slots=list(restored),
                )
                if metrics is not None:
                    metrics.logins_restored.inc(len(restored))
        await anyio.sleep(min(RETRY_S, interval_s) if failing else interval_s)
