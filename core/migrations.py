"""Applies the numbered plain-SQL files in migrations/ in order, each once, each in a transaction.

Each applied file's SHA-256 is recorded; a database whose recorded migration differs from the
file of that number was built by other code (an earlier pre-release) and is refused rather than
run against a schema the code does not expect."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg

from core import locks
from core.roles import apply_privileges

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
_ADD_CHECKSUM = "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS sha256 text"
_APPLIED = "SELECT version, sha256 FROM schema_migrations"
_RECORD = "INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)"
# The storage choice is made inside the SQL of migration 0001; this passes the operator's wish in.
_SET_STORAGE = "SELECT set_config('telecare.storage', %s, false)"


class MigrationMismatch(RuntimeError):
    """The database was migrated by different SQL than the files of this version hold."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations_dir() -> Path:
    """Where the SQL files live: the `migrations` package's data (in a checkout and in a
    regular install alike)."""
    return Path(str(resources.files("migrations")))


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """All migration files, ordered by number; a gap or duplicate number is an error."""
    found = []
    for path in sorted((directory or migrations_dir()).glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file name not of the form NNNN_name.sql: {path.name}")
        found.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if not found:
        # An install without its SQL would otherwise report "nothing pending" and run on an
        # empty database.
        raise ValueError(f"no migrations found in {directory or migrations_dir()}")
    if versions != list(range(1, len(found) + 1)):
        raise ValueError(f"migration numbers must run 1..n without gaps, got {versions}")
    return found


def migrate(dsn: str, *, storage: str = "auto", directory: Path | None = None) -> list[str]:
    """Apply pending migrations under an advisory lock; returns the names applied."""
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (locks.MIGRATIONS,))
        try:
            conn.execute(_CREATE_LEDGER)
            conn.execute(_ADD_CHECKSUM)
            done = {row[0]: row[1] for row in conn.execute(_APPLIED)}
            conn.execute(_SET_STORAGE, (storage,))
            for migration in load_migrations(directory):
                if migration.version in done:
                    _check_unchanged(migration, done[migration.version])
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(_RECORD, (migration.version, migration.name, migration.sha256))
                log.info("applied migration %s", migration.name)
                applied_now.append(migration.name)
            apply_privileges(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (locks.MIGRATIONS,))
    return applied_now


def _check_unchanged(migration: Migration, recorded: str | None) -> None:
    if recorded != migration.sha256:
        raise MigrationMismatch(
            f"migration {migration.name} in this database differs from the file (built by another "
            "version of Telecare); migrate a new database (for the demo: delete .telecare/)")
