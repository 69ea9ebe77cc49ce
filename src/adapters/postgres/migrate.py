"""Schema migrations: ``migrations/NNNN_name.sql`` files shipped with this package.

:func:`migrate` applies the pending ones in name order, each in its own transaction with its
row in ``codeyard_migrations``, so a migration is applied entirely or not at all. Every
transaction first takes a transaction-scoped advisory lock, so concurrent runs (several
processes starting at once) serialize: the later ones find the work done and apply nothing.
Files are read with :mod:`importlib.resources` (works from a wheel and an editable install).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from codeyard.adapters.postgres._errors import translated

#: Arbitrary constant key of the advisory lock serializing migration runs ("codeyard").
LOCK_KEY = 0x636F646579617264
_NAME_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_CREATE_TABLE = """
    CREATE TABLE IF NOT EXISTS codeyard_migrations (
        name       text        PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now()
    )"""


@dataclass(frozen=True)
class Migration:
    name: str
    """The file name without ``.sql``, e.g. ``0001_initial``."""
    sql: str


def available_migrations() -> list[Migration]:
    """Every shipped migration, in order. Raises ``RuntimeError`` on a malformed set."""
    folder = resources.files(__package__ or "codeyard.adapters.postgres") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        if not _NAME_RE.match(entry.name):
            msg = f"migration file {entry.name!r} is not named NNNN_lowercase_name.sql"
            raise RuntimeError(msg)
        found.append(Migration(entry.name.removesuffix(".sql"), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.name)
    numbers = [m.name[:4] for m in found]
    if len(set(numbers)) != len(numbers):
        msg = f"two migrations share a number: {numbers}"
        raise RuntimeError(msg)
    return found


async def migrate(pool: asyncpg.Pool[asyncpg.Record]) -> list[str]:
    """Apply pending migrations in order; returns the names applied by this call.

    Idempotent and safe to run concurrently. Raises ``ServiceUnavailable`` when the
    database cannot be reached; a failing migration's own error propagates (earlier ones
    stay applied).
    """
    applied: list[str] = []
    with translated("migrate"):
        async with pool.acquire() as conn:
            for migration in available_migrations():
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
                    await conn.execute(_CREATE_TABLE)
                    done = await conn.fetchval(
                        "SELECT 1 FROM codeyard_migrations WHERE name = $1", migration.name
                    )
                    if done is not None:
                        continue
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO codeyard_migrations (name) VALUES ($1)", migration.name
                    )
                applied.append(migration.name)
    return applied
