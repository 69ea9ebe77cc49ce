"""Plumbing of the service commands: which service, one client call, errors as exit codes.

Exit codes: 0 done, 1 the service failed us (unreachable, no manager answering, no such
worker, a run that ended in error), 2 bad arguments, 130 interrupted (Ctrl-C). The client
(and the redis library with it) is imported on the first call, not with the CLI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, NoReturn, TypeVar

import anyio
import typer
from rich.console import Console

from codeyard.app.settings import InvalidSettings, Settings, env_var_name, mask_url
from codeyard.domain.errors import (
    CodeyardError,
    InvalidInput,
    ReplyTimeout,
    ServiceUnavailable,
    WorkerNotFound,
)

if TYPE_CHECKING:
    from codeyard.client import CodeyardClient

T = TypeVar("T")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def err(message: str) -> None:
    Console(stderr=True).print(message, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1, hint: str | None = None) -> NoReturn:
    err(f"[bold red]error:[/] {message}")
    if hint:
        err(f"[bold]fix:[/] {hint}")
    raise typer.Exit(code)


def service_url(service: str | None) -> str:
    """``--service``, else the configured Redis URL; exit 2 when there is neither."""
    if service is not None:
        if not service.startswith(REDIS_SCHEMES):
            raise typer.BadParameter(
                "expected a redis://, rediss:// or unix:// URL", param_hint="--service"
            )
        return service
    try:
        settings = Settings()
    except InvalidSettings as exc:
        fail(f"invalid configuration: {exc}", 2)
    if settings.redis_url is None:
        env = env_var_name("redis_url")
        fail("no codeyard service given", 2, f"pass --service redis://HOST:6379/0 or set {env}")
    return settings.redis_url.get_secret_value()


def call(
    url: str,
    body: Callable[[CodeyardClient], Awaitable[T]],
    *,
    worker_id: str | None = None,
    reply_timeout_s: float = 30.0,
) -> T:
    """Run ``body`` with a client on ``url``; typed errors become a message and an exit code."""
    from codeyard.client import CodeyardClient  # noqa: PLC0415 - see module doc

    async def main() -> T:
        async with CodeyardClient.connect(url, reply_timeout_s=reply_timeout_s) as client:
            return await body(client)

    try:
        return anyio.run(main)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except BaseException as exc:  # mapped (or re-raised) by explain()
        explain(leaf(exc), mask_url(url), worker_id)


def leaf(exc: BaseException) -> BaseException:
    """The one error inside (nested) exception groups, which task groups wrap errors in."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def explain(exc: BaseException, url: str, worker_id: str | None) -> NoReturn:
    if isinstance(exc, typer.Exit | KeyboardInterrupt):
        raise typer.Exit(exc.exit_code if isinstance(exc, typer.Exit) else 130) from None
    if isinstance(exc, WorkerNotFound):
        fail(f"no such worker: {exc.fields.get('worker_id', worker_id)}")
    if isinstance(exc, ReplyTimeout):
        fail(
            f"no worker manager answered on {url} within {exc.fields.get('timeout_s')} s",
            hint="start one with `codeyard serve` on this Redis (or check --service)",
        )
    if isinstance(exc, ServiceUnavailable):
        env = env_var_name("redis_url")
        fail(
            f"cannot reach the codeyard service at {url} ({exc.message})",
            hint=f"check --service / {env} and that Redis runs there (`codeyard doctor`)",
        )
    if isinstance(exc, InvalidInput):
        fail(f"invalid request: {exc}", 2)
    if isinstance(exc, CodeyardError):
        fail(str(exc))
    if isinstance(exc, TimeoutError):
        fail("timed out waiting for the result")
    raise exc
