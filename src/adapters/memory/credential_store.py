"""An in-memory CredentialStore: tests and single-process runs that keep nothing."""

from __future__ import annotations

import anyio.lowlevel

from codeyard.domain.errors import SecretNotFound
from codeyard.domain.secrets import check_secret_name, check_secret_value


class InMemoryCredentialStore:
    """A :class:`~codeyard.ports.credential_store.CredentialStore` in a dict (nothing at
    rest, nothing shared between processes). Single event loop only."""

    def __init__(self, secrets: dict[str, str] | None = None) -> None:
        self._secrets: dict[str, str] = {}
        for name, value in (secrets or {}).items():
            self._secrets[check_secret_name(name)] = check_secret_value(value)

    def __repr__(self) -> str:  # the default would be harmless; say so explicitly
        return f"InMemoryCredentialStore(names={sorted(self._secrets)!r})"

    async def put(self, name: str, value: str) -> None:
        self._secrets[check_secret_name(name)] = check_secret_value(value)
        await anyio.lowlevel.checkpoint()

    async def get(self, name: str) -> str:
        check_secret_name(name)
        await anyio.lowlevel.checkpoint()
        try:
            return self._secrets[name]
        except KeyError:
            raise SecretNotFound("no such secret", name=name) from None

    async def delete(self, name: str) -> None:
        self._secrets.pop(check_secret_name(name), None)
        await anyio.lowlevel.checkpoint()

    async def names(self) -> list[str]:
        await anyio.lowlevel.checkpoint()
        return sorted(self._secrets)
