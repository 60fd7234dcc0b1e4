from typing import Any

import psycopg
import pytest

from core.migrations import load_migrations, migrate
from tests.conftest import ADMIN_DSN, _dsn_for, count


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_migrating_again_applies_nothing(database: str) -> None:
    assert migrate(database, storage="postgres") == []


def test_the_storage_choice_is_recorded_once(conn: psycopg.Connection[Any]) -> None:
    assert conn.execute("SELECT backend FROM storage_backend").fetchall() == [("postgres",)]


def test_plain_postgres_readings_are_range_partitioned_by_month(
        conn: psycopg.Connection[Any]) -> None:
    strategy = conn.execute("SELECT partstrat FROM pg_partitioned_table "
                            "WHERE partrelid = 'readings'::regclass").fetchone()
    assert strategy == ("r",)
    monthly = count(conn, "SELECT count(*) FROM pg_inherits WHERE inhparent = 'readings'::regclass")
    assert monthly >= 16  # 13 months back, 3 ahead, and the default partition


def test_asking_for_timescaledb_where_it_is_absent_fails_clearly() -> None:
    name = "telecare_test_no_tsdb"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
                         ).fetchone():
            pytest.skip("this server has TimescaleDB: the refusal cannot be shown here")
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with pytest.raises(psycopg.errors.RaiseException, match="timescaledb"):
            migrate(_dsn_for(name), storage="timescaledb")
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_timescaledb_path_makes_a_compressed_hypertable() -> None:
    """Runs only where a server with TimescaleDB preloaded is given (not packaged for CI)."""
    import os

    dsn = os.environ.get("TELECARE_TEST_TIMESCALEDB_DSN")
    if not dsn:
        pytest.skip("TimescaleDB is not available here: set TELECARE_TEST_TIMESCALEDB_DSN to an "
                    "empty database on a server with timescaledb preloaded to run this test")
    migrate(dsn, storage="timescaledb")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT backend FROM storage_backend").fetchone() == ("timescaledb",)
        assert conn.execute("SELECT compression_enabled FROM timescaledb_information.hypertables "
                            "WHERE hypertable_name = 'readings'").fetchone() == (True,)
