"""The CredentialStore contract (codeyard.ports.credential_store), one suite for every
adapter, then what only the encrypted file store promises (at rest, keys, rotation)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from codeyard.adapters.memory.credential_store import InMemoryCredentialStore
from codeyard.adapters.secrets_file import FernetCredentialStore, generate_key
from codeyard.domain.errors import (
    CredentialStoreUnreadable,
    InvalidName,
    InvalidRequest,
    SecretNotFound,
)
from codeyard.ports.credential_store import CredentialStore

pytestmark = pytest.mark.anyio

CANARY = "canary-7f3a9c2e51d84b06"


@pytest.fixture(params=["memory", "fernet"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], CredentialStore]:
    """A factory: two stores from it share their storage (the file), as two processes do."""
    if request.param == "memory":
        shared = InMemoryCredentialStore()
        return lambda: shared
    key = generate_key()
    return lambda: FernetCredentialStore(tmp_path / "store" / "secrets.fernet", key)


async def test_put_get_replace_delete_names(make_store: Callable[[], CredentialStore]) -> None:
    store = make_store()
    assert isinstance(store, CredentialStore)
    assert await store.names() == []
    await store.put("gh-token", "value-one-1234")
    await store.put("db.password", 'p@ss w0rd "quoted" é\n')
    assert await store.get("gh-token") == "value-one-1234"
    assert await store.get("db.password") == 'p@ss w0rd "quoted" é\n'
    await store.put("gh-token", "value-two-5678")
    assert await store.get("gh-token") == "value-two-5678"
    assert await store.names() == ["db.password", "gh-token"]
    await store.delete("gh-token")
    await store.delete("gh-token")  # idempotent
    await store.delete("never-there")
    assert await store.names() == ["db.password"]
    with pytest.raises(SecretNotFound) as caught:
        await store.get("gh-token")
    assert caught.value.fields == {"name": "gh-token"}


async def test_writes_are_seen_by_another_store_on_the_same_storage(
    make_store: Callable[[], CredentialStore],
) -> None:
    writer, reader = make_store(), make_store()
    await writer.put("shared", CANARY)
    assert await reader.get("shared") == CANARY


async def test_bad_names_and_values_are_refused_without_echo(
    make_store: Callable[[], CredentialStore],
) -> None:
    store = make_store()
    for name in ("", "-dash-first", "has space", "a/b", "x" * 129):
        with pytest.raises(InvalidName):
            await store.put(name, CANARY)
        with pytest.raises(InvalidName):
            await store.get(name)
        with pytest.raises(InvalidName):
            await store.delete(name)
    for value in ("", "nul\x00inside"):
        with pytest.raises(InvalidRequest) as caught:
            await store.put("ok", value)
        assert "inside" not in str(caught.value.to_dict())
    assert await store.names() == []


async def test_concurrent_puts_lose_nothing(make_store: Callable[[], CredentialStore]) -> None:
    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(make_store().put, f"s{i:02d}", f"value-{i:02d}-abcdef")
    store = make_store()
    assert await store.names() == [f"s{i:02d}" for i in range(20)]
    assert await store.get("s07") == "value-07-abcdef"


async def test_repr_holds_no_value(make_store: Callable[[], CredentialStore]) -> None:
    store = make_store()
    await store.put("canary", CANARY)
    assert CANARY not in repr(store)


# --- the encrypted file ------------------------------------------------------------------


async def test_file_is_encrypted_private_and_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "secrets.fernet"
    store = FernetCredentialStore(path, generate_key())
    await store.put("canary-name", CANARY)
    data = path.read_bytes()
    assert CANARY.encode() not in data
    assert b"canary-name" not in data  # names are encrypted too
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    inode = path.stat().st_ino
    await store.put("other", "another-value-99")
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # noqa: ASYNC240
    assert leftovers == []


async def test_wrong_key_is_a_typed_error_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "secrets.fernet"
    await FernetCredentialStore(path, generate_key()).put("canary", CANARY)
    before = path.read_bytes()
    wrong = FernetCredentialStore(path, generate_key())
    for call in (wrong.get("canary"), wrong.names(), wrong.put("x", "value-12345678")):
        with pytest.raises(CredentialStoreUnreadable) as caught:
            await call
        assert CANARY not in str(caught.value)
        assert CANARY not in repr(caught.value.to_dict())
    with pytest.raises(CredentialStoreUnreadable):
        await wrong.delete("canary")
    assert path.read_bytes() == before


async def test_damaged_file_and_malformed_key(tmp_path: Path) -> None:
    path = tmp_path / "secrets.fernet"
    path.write_bytes(b"not a fernet token")
    with pytest.raises(CredentialStoreUnreadable):
        await FernetCredentialStore(path, generate_key()).names()
    secret_looking = "not-a-key-" + CANARY
    with pytest.raises(CredentialStoreUnreadable) as caught:
        FernetCredentialStore(path, secret_looking)
    assert secret_looking not in str(caught.value)
    assert caught.value.fields == {"key_index": 0}


async def test_key_rotation_with_multifernet(tmp_path: Path) -> None:
    path = tmp_path / "secrets.fernet"
    old, new = generate_key(), generate_key()
    await FernetCredentialStore(path, old).put("canary", CANARY)
    rotating = FernetCredentialStore(path, f"{new},{old}")  # newest first
    assert await rotating.get("canary") == CANARY  # the old key still decrypts
    await rotating.rotate()
    assert await FernetCredentialStore(path, new).get("canary") == CANARY
    with pytest.raises(CredentialStoreUnreadable):
        await FernetCredentialStore(path, old).get("canary")


async def test_missing_directory_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "secrets.fernet"
    store = FernetCredentialStore(path, [generate_key()])
    assert await store.names() == []  # reading creates nothing
    assert not path.parent.exists()
    await store.put("a", "value-abcdefgh")
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
