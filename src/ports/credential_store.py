"""CredentialStore: named secrets a worker gets as environment variables at its start."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class CredentialStore(Protocol):
    """Secret values by name; the manager resolves a spec's ``SecretRef`` through it.

    Contract:
    - Names are domain ``Name`` identifiers; any other shape raises ``InvalidName`` (before
      anything is read or written). Values are non-empty strings (``InvalidRequest``).
    - ``put`` creates or replaces; ``get`` returns exactly what the last ``put`` stored;
      ``get`` of an unknown name raises ``SecretNotFound`` (``fields["name"]``).
    - ``delete`` is idempotent (an unknown name is not an error).
    - ``names`` lists the stored names, sorted; it never returns values.
    - A value never appears in an error message, its fields, a log line or a ``repr``.
    - A store that cannot be read with its key (wrong key, damaged data) raises
      ``CredentialStoreUnreadable`` from every method, and never overwrites that data.
    - Writes are visible to every later call, including from another store object on the
      same storage (a CLI ``put`` reaches a running manager's ``get``).
    """

    async def put(self, name: str, value: str) -> None:
        """Store ``value`` under ``name``, replacing any earlier value."""
        ...

    async def get(self, name: str) -> str:
        """The value stored under ``name``; ``SecretNotFound`` when there is none."""
        ...

    async def delete(self, name: str) -> None:
        """Forget ``name`` (no error when it is unknown)."""
        ...

    async def names(self) -> list[str]:
        """Every stored name, sorted."""
        ...
