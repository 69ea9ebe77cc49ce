"""A CommandHandler wrapper: each command's ids bound to the log context, its outcome counted.

``codeyard serve`` puts it between the command service and the worker manager, so every
log line a command causes (the manager's, the adapters') names ``request_id`` and
``worker_id``, and ``codeyard_commands_total{type,outcome}`` counts ``ok``, ``forwarded``
or the error's code (``error`` for an unexpected exception). Cancellation is not counted.
"""

from __future__ import annotations

import structlog
from pydantic import JsonValue

from codeyard.app.command_service import CommandHandler, Forward
from codeyard.domain.commands import AnyCommand, CreateWorker, derived_worker_id
from codeyard.domain.errors import CodeyardError

from .metrics import ManagerMetrics


def command_context(command: AnyCommand) -> dict[str, str]:
    """The log context of ``command``: its request id and the worker it is about."""
    worker_id = getattr(command, "worker_id", None)
    if isinstance(command, CreateWorker) and worker_id is None:
        worker_id = derived_worker_id(command.request_id)  # what the manager will use
    context = {"request_id": command.request_id}
    if worker_id:
        context["worker_id"] = worker_id
    return context


class ObservedHandler:
    """``handler`` with logging context and command metrics (a CommandHandler itself)."""

    def __init__(self, handler: CommandHandler, metrics: ManagerMetrics) -> None:
        self._handler = handler
        self._metrics = metrics

    async def handle(self, command: AnyCommand) -> JsonValue | Forward:
        with structlog.contextvars.bound_contextvars(**command_context(command)):
            try:
                result = await self._handler.handle(command)
            except CodeyardError as exc:
                self._metrics.command(command.type, exc.code)
                raise
            except Exception:
                self._metrics.command(command.type, "error")
                raise
        self._metrics.command(command.type, "forwarded" if isinstance(result, Forward) else "ok")
        return result
