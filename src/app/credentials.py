"""The ``secrets`` settings group (``CODEYARD_SECRETS__*``) and the credential store it opens.

No key, no store: a manager without one refuses worker specs that reference secrets
(rather than starting workers without them). The key is checked for shape here without
importing ``cryptography`` (settings are loaded by every worker container at start).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from codeyard.domain.errors import InvalidInput
from codeyard.ports.credential_store import CredentialStore


class InvalidSecretsSettings(InvalidInput):
    """The ``secrets`` settings are malformed (the key is never echoed)."""

    code = "invalid_secrets_settings"


def default_store_path() -> Path:
    """``$XDG_DATA_HOME/codeyard/secrets.fernet`` (``~/.local/share`` without it)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "codeyard" / "secrets.fernet"


class SecretsSettings(BaseModel):
    """The credential store worker secrets are resolved from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: SecretStr | None = Field(
        default=None,
        description="Fernet key(s) of the credential store, comma-separated, newest first "
        "(rotation: prepend a new key, run `codeyard secrets rotate`, drop the old one). "
        "`codeyard secrets keygen` makes one. Unset: no store; worker specs with secrets "
        "are refused.",
    )
    path: Path | None = Field(
        default=None,
        description="The encrypted store file (0600, replaced atomically on each change).",
        json_schema_extra={"doc_default": "`$XDG_DATA_HOME/codeyard/secrets.fernet`"},
    )

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        keys = [k.strip() for k in value.get_secret_value().split(",") if k.strip()]
        if not keys:
            raise InvalidSecretsSettings("CODEYARD_SECRETS__KEY is empty")
        for index, key in enumerate(keys):
            try:
                raw = base64.urlsafe_b64decode(key.encode("ascii"))
            except (binascii.Error, ValueError, UnicodeEncodeError):
                raw = b""
            if len(raw) != 32:
                raise InvalidSecretsSettings(
                    "CODEYARD_SECRETS__KEY: each key must be 32 url-safe base64 bytes "
                    "(`codeyard secrets keygen`)",
                    key_index=index,
                )
        return value

    @property
    def store_path(self) -> Path:
        return self.path if self.path is not None else default_store_path()


def open_credential_store(settings: Any) -> CredentialStore | None:
    """The store of ``settings`` (a :class:`~codeyard.app.settings.Settings`); ``None``
    when no key is configured."""
    group: SecretsSettings = settings.secrets
    if group.key is None:
        return None
    # Imported here: cryptography is only loaded by processes that use the store.
    from codeyard.adapters.secrets_file import FernetCredentialStore  # noqa: PLC0415

    return FernetCredentialStore(group.store_path, group.key.get_secret_value())
