"""The real migrations, on both storage backends."""

from typing import Any

import psycopg
import pytest

from core.migrations import load_migrations, migrate
from tests.conftest import ADMIN_DSN, admin_dsn_of, count, empty_database

# What migration 0001 reads to pass the operator's storage wish in (core/migrations.py).
SET_STORAGE = "SELECT set_config('telecare.storage', %s, false)"


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_migrating_again_applies_nothing(database: str, backend: str) -> None:
    assert migrate(database, storage=backend) == []


def test_the_storage_choice_is_recorded_once(conn: psycopg.Connection[Any], backend: str) -> None:
    assert conn.execute("SELECT backend FROM storage_backend").fetchall() == [(backend,)]


def test_every_migration_applies_without_a_warning(backend: str) -> None:
    """A server WARNING during a migration is a defect we would otherwise never read (it was
    `column "device_id" should be used for segmenting or ordering` on TimescaleDB)."""
    notices: list[str] = []
    with empty_database(admin_dsn_of(backend)) as dsn, psycopg.connect(dsn) as conn:
        conn.add_notice_handler(lambda d: notices.append(f"{d.severity}: {d.message_primary}"))
        conn.execute(SET_STORAGE, (backend,))
        for migration in load_migrations():
            conn.execute(migration.sql.encode())
    assert [n for n in notices if n.startswith("WARNING")] == []


def test_plain_postgres_readings_are_range_partitioned_by_month(postgres_database: str) -> None:
    with psycopg.connect(postgres_database) as conn:
        strategy = conn.execute("SELECT partstrat FROM pg_partitioned_table "
                                "WHERE partrelid = 'readings'::regclass").fetchone()
        assert strategy == ("r",)
        monthly = count(conn, "SELECT count(*) FROM pg_inherits "
                              "WHERE inhparent = 'readings'::regclass")
    assert monthly >= 16  # 13 months back, 3 ahead, and the default partition


def test_asking_for_timescaledb_where_it_is_not_preloaded_fails_clearly() -> None:
    # The machine's own server may list the extension (../shared/timescaledb-pg15/install puts
    # its files there) but does not preload it, which is what TimescaleDB needs.
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        preload = admin.execute("SHOW shared_preload_libraries").fetchone()
    if preload and "timescaledb" in str(preload[0]):
        pytest.skip(f"{ADMIN_DSN} preloads TimescaleDB: the refusal cannot be shown there")
    with empty_database(ADMIN_DSN) as dsn, \
            pytest.raises(psycopg.errors.RaiseException, match="timescaledb"):
        migrate(dsn, storage="timescaledb")


def test_timescaledb_path_makes_a_compressed_hypertable(timescaledb_database: str) -> None:
    with psycopg.connect(timescaledb_database) as conn:
        assert conn.execute("SELECT backend FROM storage_backend").fetchone() == ("timescaledb",)
        assert conn.execute("SELECT compression_enabled FROM timescaledb_information.hypertables "
                            "WHERE hypertable_name = 'readings'").fetchone() == (True,)


def test_timescaledb_compression_segments_or_orders_by_every_key_column(
        timescaledb_database: str) -> None:
    """Idempotent inserts into compressed chunks check the primary key; a key column that is
    neither segment nor order column makes each check decompress whole segments."""
    with psycopg.connect(timescaledb_database) as conn:
        key = {row[0] for row in conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = 'readings'::regclass AND i.indisprimary")}
        covered = {row[0] for row in conn.execute(
            "SELECT attname FROM timescaledb_information.compression_settings "
            "WHERE hypertable_name = 'readings' "
            "AND (segmentby_column_index IS NOT NULL OR orderby_column_index IS NOT NULL)")}
    assert key and key <= covered, f"key columns not segmented or ordered by: {key - covered}"
