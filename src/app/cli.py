"""The ``codeyard`` command line.

``doctor`` and ``demo`` import their machinery (docker, redis, asyncpg: ~0.9 s) inside the
command, so ``version``, ``config`` and ``--help`` stay fast. Nothing connects anywhere
until a command asks it to.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.table import Table

from codeyard.app.cli_images import register as register_image_commands
from codeyard.app.cli_secrets import register as register_secret_commands
from codeyard.app.cli_service import register as register_service_commands
from codeyard.app.run_cli import register as register_run_command
from codeyard.app.settings import (
    InvalidSettings,
    Settings,
    env_var_name,
    settings_table_markdown,
    unknown_env_vars,
)
from codeyard.domain.errors import InvalidInput

app = typer.Typer(
    name="codeyard",
    help="Run AI coding agents in isolated, ephemeral Docker workers.",
    no_args_is_help=True,
    add_completion=False,
)
register_service_commands(app)  # ls, status, logs, attach, send, rm, create
register_run_command(app)  # run
register_image_commands(app)  # images ls|build|gc, gc
register_secret_commands(app)  # secrets keygen|set|ls|rm|rotate


# Consoles are made per use, not at import: they read the terminal width (COLUMNS) and the
# current sys.stdout when created, which is what tests and pipes need.
def _out() -> Console:
    return Console()


def _err() -> Console:
    return Console(stderr=True)


def _settings() -> Settings:
    """The environment's settings, or a readable error and exit code 2."""
    try:
        return Settings()
    except InvalidSettings as exc:
        _err().print(f"[bold red]invalid configuration:[/] {exc.message}", highlight=False)
        for item in exc.fields.get("errors", []):
            _err().print(f"  {item['env']}: {item['msg']}", highlight=False)
        if "env" in exc.fields and not exc.fields.get("errors"):
            _err().print(f"  set {exc.fields['env']}", highlight=False)
        raise typer.Exit(2) from exc


@app.command()
def version() -> None:
    """Print the installed version."""
    _out().print(f"codeyard {importlib.metadata.version('codeyard')}", highlight=False)


def _flatten(data: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows.extend(_flatten(value, (*path, key)))
        else:
            rows.append((env_var_name(*path, key), value))
    return rows


@app.command()
def config(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the reference table of every setting.")
    ] = False,
) -> None:
    """Print the effective settings (passwords masked)."""
    if markdown:
        typer.echo(settings_table_markdown())
        return
    settings = _settings()
    data = settings.masked()
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        table = Table(title="codeyard settings (passwords masked)")
        table.add_column("Variable", style="cyan", no_wrap=True)
        table.add_column("Value", overflow="fold")
        for name, value in _flatten(data):
            table.add_row(name, "[dim]unset[/]" if value is None else str(value))
        _out().print(table)
    for name in unknown_env_vars(os.environ):
        _err().print(f"[yellow]warning:[/] {name} is not a codeyard setting (ignored)")


@app.command()
def doctor() -> None:
    """Check Docker, Redis, PostgreSQL, agent CLIs and CA certificates; exit 1 if a check
    the selected backends need fails."""
    from codeyard.app.doctor import Status, run_checks  # noqa: PLC0415 - see module doc

    settings = _settings()
    checks = anyio.run(run_checks, settings)
    colors = {Status.OK: "green", Status.MISSING: "red", Status.WARN: "yellow", Status.SKIP: "dim"}
    table = Table(title="codeyard doctor")
    table.add_column("Check", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("Needed", no_wrap=True)
    table.add_column("Detail / fix", overflow="fold")
    for check in checks:
        status = check.status
        if status is not Status.OK and not check.required:
            color = "yellow" if status is Status.MISSING else colors[status]
        else:
            color = colors[status]
        detail = check.detail + (f"\n[bold]fix:[/] {check.fix}" if check.fix else "")
        table.add_row(
            check.name,
            f"[{color}]{status.value}[/]",
            "required" if check.required else "optional",
            detail,
        )
    _out().print(table)
    failed = [c.name for c in checks if c.failed]
    if failed:
        _err().print(f"[bold red]required checks failed:[/] {', '.join(failed)}")
        raise typer.Exit(1)
    _out().print("[green]all required checks passed[/]")


@app.command()
def demo(
    provider: Annotated[str, typer.Option(help="Agent CLI the workers run.")] = "claude",
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Where to create the sample repository (new or empty; default: a "
            "new temp dir). It is kept after the run.",
        ),
    ] = None,
) -> None:
    """Three parallel tasks on a sample repository in Docker workers, reviewed and merged:
    the built-in scripted model when the provider's API key is not set, else the real one.
    Exit 1 unless all three end merged."""
    from codeyard.app.demo import demo_command  # noqa: PLC0415 - see module doc

    result = demo_command(_settings(), provider=provider, directory=directory)
    if not result.ok:
        raise typer.Exit(1)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def worker(ctx: typer.Context) -> None:
    """Serve a worker's input stream with an agent CLI (runs inside the worker container).

    The same as the codeyard-worker command (the one worker containers run): see
    `codeyard worker --help` for its options.
    """
    from codeyard.app.worker_cli import main as worker_main  # noqa: PLC0415 - see module doc

    code = worker_main(ctx.args, prog="codeyard worker")
    if code:
        raise typer.Exit(code)


@app.command()
def serve() -> None:
    """Run the worker manager: consume worker:commands, spawn and watch workers.

    Configured by the CODEYARD_* settings (Redis event bus required; Postgres for a durable
    registry shared by several managers). Stops on SIGTERM/SIGINT; workers keep running and
    are adopted by the next start.
    """
    from codeyard.app.manager.serve import serve as run_serve  # noqa: PLC0415 - see module doc
    from codeyard.app.observability.logging import configure_logging  # noqa: PLC0415
    from codeyard.domain.errors import CodeyardError  # noqa: PLC0415

    settings = _settings()
    configure_logging(settings.log_level, json=settings.log_json)
    if settings.backends.event_bus != "redis":
        _err().print(
            "[bold red]serve needs a shared event bus:[/] set "
            f"{env_var_name('backends', 'event_bus')}=redis and {env_var_name('redis_url')}",
            highlight=False,
        )
        raise typer.Exit(2)
    try:
        anyio.run(run_serve, settings)
    except InvalidInput as exc:
        _err().print(f"[bold red]cannot start the manager:[/] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    except CodeyardError as exc:
        _err().print(f"[bold red]manager stopped:[/] {exc}", highlight=False)
        raise typer.Exit(1) from exc


def main() -> None:
    app()
