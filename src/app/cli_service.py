"""``codeyard ls/status/logs/attach/send/rm/create``: drive a running service like docker/gh.

Every command talks to the worker manager through :class:`~codeyard.client.CodeyardClient`
on the service's Redis (``--service URL``, default ``CODEYARD_REDIS_URL``). The client (and
with it the redis library) is imported inside the commands so ``--help`` stays fast. Exit
codes: see :mod:`codeyard.app.cli_calls`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import TypeAdapter
from rich.console import Console
from rich.table import Table

from codeyard.app.cli_calls import call, err, service_url
from codeyard.app.cli_follow import attach_worker, follow_worker
from codeyard.app.cli_render import result_summary
from codeyard.domain.base import Name
from codeyard.domain.errors import InvalidInput, WorkerNotFound
from codeyard.domain.worker import WorkerRecord, WorkerSpec

if TYPE_CHECKING:
    from codeyard.client import CodeyardClient
    from codeyard.domain.agent import AgentResult

#: A create may build the worker image first: minutes, not the usual reply timeout.
CREATE_TIMEOUT_S = 600.0
_NAME: TypeAdapter[str] = TypeAdapter(Name)

Service = Annotated[
    str | None,
    typer.Option(
        "--service",
        metavar="URL",
        help="Redis URL of the codeyard service (default: CODEYARD_REDIS_URL).",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (machine output).")]


def _worker_id(value: str) -> str:
    """Refuse an id no worker can have before connecting anywhere (exit 2)."""
    try:
        return _NAME.validate_python(value)  # raises InvalidName itself
    except InvalidInput as exc:
        raise typer.BadParameter(exc.message) from exc


def _worker_ids(values: list[str]) -> list[str]:
    return [_worker_id(value) for value in values]


WorkerId = Annotated[str, typer.Argument(metavar="ID", help="The worker id.", callback=_worker_id)]


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def _age(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "-"
    seconds = max(int((now - then).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _print_result(result: AgentResult, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    """The run's text on stdout, its status/cost on stderr; exit 1 when it failed."""
    if as_json:
        _echo_json({**(extra or {}), "result": result.model_dump(mode="json")})
    else:
        if result.text:
            typer.echo(result.text)
        err(f"result: {result_summary(result)}")
    if not result.ok:
        raise typer.Exit(1)


def ls(
    service: Service = None,
    show_all: Annotated[
        bool, typer.Option("--all", "-a", help="Include stopped and failed workers.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """List workers (the active ones unless --all)."""
    url = service_url(service)
    workers = call(url, lambda c: c.list())
    if not show_all:
        workers = [w for w in workers if w.status.is_active]
    if as_json:
        _echo_json([w.model_dump(mode="json") for w in workers])
        return
    now = datetime.now(UTC)
    table = Table(box=None, header_style="bold")
    for column in ("ID", "STATUS", "AGENT", "HOST", "AGE", "IMAGE", "ERROR"):
        table.add_column(column, no_wrap=column != "ERROR", overflow="fold")
    for w in workers:
        row = (w.worker_id, w.status.value, w.spec.agent, w.host or "-", _age(w.created_at, now))
        table.add_row(*row, w.image or "-", w.error or "")
    Console().print(table)


def status(worker_id: WorkerId, service: Service = None, as_json: AsJson = False) -> None:
    """Show one worker: status, timings, heartbeat age, address, container, error."""
    url = service_url(service)
    record = call(url, lambda c: c.status(worker_id), worker_id=worker_id)
    if as_json:
        _echo_json(record.model_dump(mode="json"))
        return
    table = Table(box=None, show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in _status_rows(record, datetime.now(UTC)):
        table.add_row(key, value)
    Console().print(table)


def _status_rows(r: WorkerRecord, now: datetime) -> list[tuple[str, str]]:
    def when(at: datetime | None) -> str:
        return "-" if at is None else f"{at.isoformat(timespec='seconds')} ({_age(at, now)} ago)"

    return [
        ("worker", r.worker_id),
        ("status", r.status.value),
        ("agent", r.spec.agent),
        ("host", r.host or "-"),
        ("image", r.image or "-"),
        ("container", r.container_id or "-"),
        ("ip", r.ip or "-"),
        ("task", r.task_id or "-"),
        ("created", when(r.created_at)),
        ("started", when(r.started_at)),
        ("ended", when(r.ended_at)),
        ("heartbeat", f"{_age(r.heartbeat_at, now)} ago"),
        ("error", r.error or "-"),
    ]


def logs(
    worker_id: WorkerId,
    service: Service = None,
    tail: Annotated[int, typer.Option(min=1, max=100_000, help="Container log lines.")] = 100,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Follow the worker's events until it stops (Ctrl-C ends)."
        ),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Print a worker's container logs, or with -f follow its output events.

    -f shows the run so far, then live events, one line each (--json: one event JSON a
    line), until the worker stops or Ctrl-C; --tail applies to the container logs.
    """
    url = service_url(service)
    if follow:
        call(url, lambda c: follow_worker(c, worker_id, as_json=as_json), worker_id=worker_id)
        return
    text = call(url, lambda c: c.logs(worker_id, tail=tail), worker_id=worker_id)
    if as_json:
        _echo_json({"worker_id": worker_id, "logs": text})
    else:
        typer.echo(text, nl=not text.endswith("\n"))


def attach(worker_id: WorkerId, service: Service = None) -> None:
    """Follow the worker's events and send each stdin line as a follow-up prompt.

    End of input (Ctrl-D) ends attach once the prompts sent have their result; the worker
    keeps running. Also ends when the worker stops.
    """
    url = service_url(service)
    call(url, lambda c: attach_worker(c, worker_id), worker_id=worker_id)


def send(
    worker_id: WorkerId,
    prompt: Annotated[str, typer.Argument(help="The prompt.")],
    *,
    service: Service = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the result; exit 1 if it is an error.")
    ] = False,
    new_session: Annotated[
        bool, typer.Option("--new-session", help="Do not resume the previous turn.")
    ] = False,
    timeout: Annotated[float | None, typer.Option(min=0.001, help="Seconds --wait waits.")] = None,
    as_json: AsJson = False,
) -> None:
    """Push a prompt to a worker; prints its run id (with --wait: the result's text)."""
    if not prompt.strip():
        raise typer.BadParameter("must not be empty", param_hint="PROMPT")
    url = service_url(service)

    async def body(c: CodeyardClient) -> tuple[str, AgentResult | None]:
        sent = await c.send(worker_id, prompt, new_session=new_session, via_manager=True)
        if not wait:
            return sent.request_id, None
        result = await c.wait_result(worker_id, request_id=sent.request_id, timeout_s=timeout)
        return sent.request_id, result

    run_id, result = call(url, body, worker_id=worker_id)
    if result is not None:
        _print_result(result, as_json, {"worker_id": worker_id, "request_id": run_id})
    elif as_json:
        _echo_json({"worker_id": worker_id, "request_id": run_id})
    else:
        typer.echo(run_id)


def rm(
    worker_ids: Annotated[
        list[str], typer.Argument(metavar="ID...", help="Workers to delete.", callback=_worker_ids)
    ],
    service: Service = None,
    as_json: AsJson = False,
) -> None:
    """Delete workers; prints each one's final status (exit 1 if one was not found)."""
    url = service_url(service)

    async def body(c: CodeyardClient) -> list[tuple[str, str | None]]:
        done: list[tuple[str, str | None]] = []
        for worker_id in worker_ids:
            try:
                done.append((worker_id, (await c.delete(worker_id)).status.value))
            except WorkerNotFound:
                done.append((worker_id, None))
        return done

    done = call(url, body)
    if as_json:
        _echo_json([{"worker_id": w, "status": s} for w, s in done if s is not None])
    for worker_id, final in done:
        if final is None:
            err(f"[bold red]error:[/] no such worker: {worker_id}")
        elif not as_json:
            typer.echo(f"{worker_id}\t{final}")
    if any(final is None for _, final in done):
        raise typer.Exit(1)


def create(
    *,
    service: Service = None,
    agent: Annotated[
        str, typer.Option(help="Agent CLI: claude, codex, gemini, droid, opencode.")
    ] = "claude",
    instructions_file: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, readable=True, help="Instructions (CLAUDE.md...)."
        ),
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option("--allow", metavar="CMD", help="An allowed command (repeat)."),
    ] = None,
    prompt: Annotated[str | None, typer.Option(help="First prompt (headless worker).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the prompt's result.")] = False,
    timeout: Annotated[
        float, typer.Option(min=0.001, help="Seconds the create may take.")
    ] = CREATE_TIMEOUT_S,
    as_json: AsJson = False,
) -> None:
    """Create a worker and print its id (with --prompt --wait: then the result's text)."""
    if wait and prompt is None:
        raise typer.BadParameter("--wait needs --prompt", param_hint="--wait")
    try:
        spec = WorkerSpec(
            agent=agent,
            instructions=None
            if instructions_file is None
            else instructions_file.read_text("utf-8"),
            allowed_commands=tuple(allow or ()),
        )
    except InvalidInput as exc:
        raise typer.BadParameter(exc.message, param_hint="--agent") from exc
    url = service_url(service)

    async def body(c: CodeyardClient) -> tuple[dict[str, Any], AgentResult | None]:
        created = await c.create(spec, prompt=prompt, timeout_s=timeout)
        data = created.model_dump(mode="json")
        if not wait or created.prompt_request_id is None:
            return data, None
        rid = created.prompt_request_id
        return data, await c.wait_result(created.worker_id, request_id=rid)

    data, result = call(url, body)
    if not as_json:
        typer.echo(data["worker_id"])
    if result is not None:
        _print_result(result, as_json, data)
    elif as_json:
        _echo_json(data)


def register(app: typer.Typer) -> None:
    """Add the service commands to the ``codeyard`` app."""
    for command in (ls, status, logs, attach, send, rm, create):
        app.command()(command)
