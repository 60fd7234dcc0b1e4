"""Database connections: a pool for request handlers, single connections for workers."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool


def open_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> ConnectionPool:
    """A pool that re-checks connections, so a database restart costs one retry, not an outage."""
    pool = ConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row},
        check=ConnectionPool.check_connection,
        open=False,
    )
    pool.open(wait=True, timeout=30)
    return pool


def connect(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    """A plain connection (autocommit off) for a worker that owns its transactions."""
    return psycopg.connect(dsn, connect_timeout=5)
