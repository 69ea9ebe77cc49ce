"""FernetCredentialStore: secrets encrypted at rest in one file.

Decisions:

* **A file, not a table.** Secrets are needed where worker containers are created, by the
  manager of that engine, and by ``codeyard secrets`` on the same host; the embedded mode
  has no Postgres at all. A file works in every mode, and holding only ciphertext it can
  be copied or synced to other hosts as it is. (A Postgres adapter can come later behind
  the same port; nothing above it would change.)
* **One token for the whole store.** The file is a single Fernet token of the JSON
  ``{"version": 1, "secrets": {name: value}}``: names are hidden too, and a damaged or
  foreign file is one authentication failure, not a half-readable map.
* **Keys and rotation.** Keys are Fernet keys (32 url-safe base64 bytes), newest first,
  through :class:`~cryptography.fernet.MultiFernet`: every key decrypts, the first
  encrypts, so rotating is "prepend a new key, then :meth:`rotate` (or any write)".
* **Writes** (``put``, ``delete``, ``rotate``) hold an exclusive ``flock`` on a sibling
  ``.lock`` file for their read-modify-write, so a CLI and a manager writing at once lose
  nothing; the new file is written 0600 next to the old one, fsynced and renamed over it,
  so a reader sees the old or the new store, never half of one. Reads take no lock.
* **No caching**: every ``get`` reads the file (sub-millisecond), so a secret set with the
  CLI reaches a running manager's next create.
* **Errors never carry a value**: a wrong key or damaged file is
  :class:`CredentialStoreUnreadable` naming the path only, and it fails writes too (a wrong
  key must not overwrite the store with an empty one).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets as _random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from codeyard.domain.errors import CredentialStoreUnreadable, SecretNotFound
from codeyard.domain.secrets import check_secret_name, check_secret_value

_VERSION = 1
_T = TypeVar("_T")


def generate_key() -> str:
    """A fresh Fernet key (url-safe base64 text)."""
    return Fernet.generate_key().decode("ascii")


def parse_keys(keys: str | Sequence[str]) -> MultiFernet:
    """``MultiFernet`` of keys (a sequence, or one comma-separated string), newest first."""
    items = keys.split(",") if isinstance(keys, str) else list(keys)
    items = [k.strip() for k in items if k.strip()]
    if not items:
        raise CredentialStoreUnreadable("no credential store key given")
    fernets = []
    for index, key in enumerate(items):
        try:
            fernets.append(Fernet(key.encode("ascii")))
        except (ValueError, UnicodeEncodeError):
            # ValueError's text is generic, but the key itself is never echoed.
            raise CredentialStoreUnreadable(
                "a credential store key is not a Fernet key (32 url-safe base64 bytes)",
                key_index=index,
            ) from None
    return MultiFernet(fernets)


class FernetCredentialStore:
    """A :class:`~codeyard.ports.credential_store.CredentialStore` in an encrypted file
    (module doc). ``keys``: Fernet keys, newest first, or one comma-separated string."""

    def __init__(self, path: Path, keys: str | Sequence[str]) -> None:
        self.path = Path(path)
        self._fernet = parse_keys(keys)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def __repr__(self) -> str:
        return f"FernetCredentialStore(path={str(self.path)!r})"

    # --- the port --------------------------------------------------------------------------

    async def put(self, name: str, value: str) -> None:
        check_secret_name(name)
        check_secret_value(value)

        def change(data: dict[str, str]) -> None:
            data[name] = value

        await self._run(self._modify, change)

    async def get(self, name: str) -> str:
        check_secret_name(name)
        data = await self._run(self._read)
        try:
            return data[name]
        except KeyError:
            raise SecretNotFound("no such secret", name=name) from None

    async def delete(self, name: str) -> None:
        check_secret_name(name)

        def change(data: dict[str, str]) -> None:
            data.pop(name, None)

        await self._run(self._modify, change)

    async def names(self) -> list[str]:
        return sorted(await self._run(self._read))

    async def rotate(self) -> None:
        """Re-encrypt the store with the first (newest) key; the others may then go."""
        await self._run(self._modify, lambda data: None)

    # --- blocking parts (worker threads) ---------------------------------------------------

    @staticmethod
    async def _run(func: Callable[..., _T], *args: Any) -> _T:
        return await anyio.to_thread.run_sync(func, *args)

    def _read(self) -> dict[str, str]:
        try:
            token = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise CredentialStoreUnreadable(
                "cannot read the credential store", path=str(self.path), error=exc.strerror
            ) from None
        try:
            plain = self._fernet.decrypt(token)
        except InvalidToken:
            raise CredentialStoreUnreadable(
                "cannot decrypt the credential store: wrong key, or not a store file",
                path=str(self.path),
            ) from None
        try:
            doc = json.loads(plain)
        except ValueError:
            doc = None  # not re-raised: a JSON error's message quotes the document
        secrets = doc.get("secrets") if isinstance(doc, dict) else None
        if (
            not isinstance(doc, dict)
            or doc.get("version") != _VERSION
            or not isinstance(secrets, dict)
        ):
            raise CredentialStoreUnreadable(
                "the credential store decrypts to an unknown format", path=str(self.path)
            )
        return {str(k): str(v) for k, v in secrets.items()}

    def _modify(self, change: Callable[[dict[str, str]], None]) -> None:
        with self._locked():
            data = self._read()
            change(data)
            plain = json.dumps({"version": _VERSION, "secrets": data}, sort_keys=True)
            self._write(self._fernet.encrypt(plain.encode("utf-8")))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, token: bytes) -> None:
        temp = self.path.with_name(f".{self.path.name}.{_random.token_hex(6)}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(token)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
