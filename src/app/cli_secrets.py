"""``codeyard secrets keygen|set|ls|rm|rotate``: the credential store worker secrets come from.

The store is the one ``codeyard serve`` uses (``CODEYARD_SECRETS__KEY``,
``CODEYARD_SECRETS__PATH``): a value set here reaches the next create of a worker whose spec
references it. A value is never an argument (``ps`` shows arguments to every user): ``set``
reads it from stdin, or asks for it without echo on a terminal. No command prints a value.
Exit codes: 0 done, 1 the store cannot be read (wrong key...), 2 bad arguments or settings.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import anyio
import typer

from codeyard.app.cli_calls import fail
from codeyard.app.credentials import open_credential_store
from codeyard.app.settings import InvalidSettings, Settings
from codeyard.domain.errors import CodeyardError, InvalidInput
from codeyard.ports.credential_store import CredentialStore

T = TypeVar("T")

secrets_app = typer.Typer(
    name="secrets",
    help="Worker secrets: the encrypted credential store (CODEYARD_SECRETS__*).",
    no_args_is_help=True,
)

SecretName = Annotated[str, typer.Argument(help="The secret's name (a worker spec's SecretRef).")]


def _store() -> CredentialStore:
    try:
        store = open_credential_store(Settings())
    except InvalidSettings as exc:
        fail(f"invalid configuration: {exc.message}", 2)
    except InvalidInput as exc:
        fail(str(exc), 2)
    if store is None:
        fail(
            "no credential store: CODEYARD_SECRETS__KEY is not set",
            2,
            hint="`codeyard secrets keygen`, then export CODEYARD_SECRETS__KEY=<the key>",
        )
    return store


def _run(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return anyio.run(call)
    except InvalidInput as exc:
        fail(str(exc), 2)
    except CodeyardError as exc:
        fail(str(exc), 1)


@secrets_app.command("keygen")
def keygen() -> None:
    """Print a new key for CODEYARD_SECRETS__KEY (keep it like a password)."""
    from codeyard.adapters.secrets_file import generate_key  # noqa: PLC0415 - see module doc

    typer.echo(generate_key())


@secrets_app.command("set")
def set_secret(name: SecretName) -> None:
    """Store a secret; the value is read from stdin (or asked for, hidden, on a terminal)."""
    if sys.stdin.isatty():
        value = typer.prompt(f"value of {name}", hide_input=True)
    else:
        value = sys.stdin.read().removesuffix("\n")
    store = _store()
    _run(lambda: store.put(name, value))
    typer.echo(f"stored {name}")


@secrets_app.command("ls")
def list_secrets() -> None:
    """List the stored names (never the values)."""
    store = _store()
    for name in _run(store.names):
        typer.echo(name)


@secrets_app.command("rm")
def remove_secret(name: SecretName) -> None:
    """Forget a secret (no error when it is unknown)."""
    store = _store()
    _run(lambda: store.delete(name))
    typer.echo(f"removed {name}")


@secrets_app.command("rotate")
def rotate() -> None:
    """Re-encrypt the store with the first key of CODEYARD_SECRETS__KEY."""
    store = _store()
    rotate_store = getattr(store, "rotate", None)
    if rotate_store is None:
        fail("this credential store cannot rotate its key", 2)
    _run(rotate_store)
    typer.echo("re-encrypted with the first key; older keys can now be dropped")


def register(app: typer.Typer) -> None:
    """Add ``secrets keygen|set|ls|rm|rotate`` to the ``codeyard`` app."""
    app.add_typer(secrets_app)
