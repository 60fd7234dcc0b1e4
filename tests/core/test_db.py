"""core.db on the real database."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import psycopg

from core.db import use_utc


def test_after_use_utc_timestamps_carry_the_tzinfo_object_of_datetime_utc(postgres_database: str) -> None:
    # The alert engine's comparisons of times rely on one tzinfo object for all of them.
    with psycopg.connect(postgres_database, autocommit=True) as conn:
        conn.execute("SET TIME ZONE 'Etc/UTC'")  # the server default here: a ZoneInfo
        assert _now(conn).tzinfo is not UTC
        use_utc(conn)
        assert _now(conn).tzinfo is UTC


def _now(conn: psycopg.Connection[Any]) -> Any:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]
