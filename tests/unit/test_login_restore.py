"""The manager's login-restore loop (codeyard.app.manager.login_restore) on the in-memory
credentials: lost logins come back within a pass, logged and counted; a failing store
(Redis down) is logged once per outage and the loop goes on. On a real Redis restart
under a running worker: tests/faults/test_worker_login_restore.py."""

from __future__ import annotations

import anyio
import pytest
from structlog.testing import capture_logs

from codeyard.adapters.memory.worker_credentials import InMemoryWorkerCredentials
from codeyard.app.manager.login_restore import restore_logins_loop
from codeyard.app.observability.metrics import ManagerMetrics
from codeyard.domain.errors import ServiceUnavailable

pytestmark = pytest.mark.anyio
RESTORED = "codeyard_worker_logins_restored_total"


class FlakyCredentials(InMemoryWorkerCredentials):
    """``restore`` raises ``ServiceUnavailable`` while ``down``."""

    down = False

    async def restore(self) -> tuple[str, ...]:
        if self.down:
            raise ServiceUnavailable("redis unreachable during slots", service="redis")
        return await super().restore()


async def test_lost_logins_come_back_logged_and_counted() -> None:
    logins, metrics = FlakyCredentials("me"), ManagerMetrics()
    worker = await logins.issue("w1")
    await logins.bind("w1", "w1")
    await logins.issue("pool-1")
    with capture_logs() as logs:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: restore_logins_loop(logins, interval_s=0.01, metrics=metrics))
            await anyio.sleep(0.05)  # passes with nothing lost: nothing logged
            logins.down = True
            logins.lose_all()  # Redis restarted...
            await anyio.sleep(0.05)
            logins.down = False  # ...and answers again
            with anyio.fail_after(5):
                while await logins.slots() != ("pool-1", "w1"):  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    assert logins.authenticates(worker.username, worker.password.get_secret_value())
    assert await logins.keys("w1") == ("worker:standby:w1", "worker:w1:input", "worker:w1:output")
    events = [(e["event"], e["log_level"]) for e in logs]
    assert events == [
        ("worker logins not checked, retrying", "warning"),  # once per outage
        ("worker logins restored (Redis had lost them)", "warning"),
    ]
    restored = next(e for e in logs if e["event"].startswith("worker logins restored"))
    assert (restored["count"], restored["slots"]) == (2, ["pool-1", "w1"])
    assert metrics.registry.get_sample_value(RESTORED) == 2.0
