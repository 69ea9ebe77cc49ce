"""Secrets as workers get them: rules shared by the credential stores, the manager and the
worker wrapper.

A worker's secrets reach it only as environment variables of its container, set when the
container is created (never in its image, labels, registry record or the event bus). The
variable :data:`SECRET_ENV_VAR` lists their NAMES (``A,B``), so the worker knows which of
its variables' values to redact from everything it publishes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from codeyard.domain.base import _check_name
from codeyard.domain.errors import InvalidRequest

#: The container variable naming the secret variables, comma-separated.
SECRET_ENV_VAR = "CODEYARD_SECRET_ENV"
#: A portable environment variable name (POSIX shells accept these and only these).
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Variables a secret may not set: the worker's own configuration comes through them.
RESERVED_PREFIX = "CODEYARD_"


def check_secret_name(name: str) -> str:
    """``name`` when it is a valid secret name (a domain ``Name``); ``InvalidName`` else."""
    if not isinstance(name, str):
        raise InvalidRequest("a secret name must be a string")
    return _check_name(name)


def check_secret_value(value: str) -> str:
    """``value`` when it can be stored; never echoes it in the error."""
    if not isinstance(value, str) or not value:
        raise InvalidRequest("a secret value must be a non-empty string")
    if "\x00" in value:
        raise InvalidRequest("a secret value cannot hold NUL (environment variables cannot)")
    return value


def check_env_names(names: Iterable[str], *, reserved: Iterable[str] = ()) -> None:
    """Secret env names must be valid, distinct and not clash with the worker's own."""
    seen: set[str] = set()
    taken = set(reserved)
    for name in names:
        if not _ENV_NAME.match(name):
            raise InvalidRequest("a secret's env must be a valid variable name", env=name)
        if name.upper().startswith(RESERVED_PREFIX) or name in taken:
            raise InvalidRequest("a secret cannot set a variable the worker uses", env=name)
        if name in seen:
            raise InvalidRequest("two secrets set the same variable", env=name)
        seen.add(name)


def secret_env_names(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The secret variable names :data:`SECRET_ENV_VAR` lists in ``environ``."""
    raw = environ.get(SECRET_ENV_VAR, "")
    return tuple(name for name in (part.strip() for part in raw.split(",")) if name)


def secret_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The secret variables of ``environ`` (name -> value), those that are set."""
    return {name: environ[name] for name in secret_env_names(environ) if environ.get(name)}
