"""A fresh database per evaluated population: created from the admin DSN, built by the real
migrations, dropped afterwards (unless kept for a look)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from core.migrations import migrate

log = logging.getLogger(__name__)


@contextmanager
def fresh_database(admin_dsn: str, *, keep: bool = False, storage: str = "auto"
                   ) -> Iterator[str]:
    """A new migrated database on the server of `admin_dsn`; yields its DSN."""
    name = f"telecare_eval_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(admin_dsn, dbname=name)
    try:
        migrate(dsn, storage=storage)
        yield dsn
    finally:
        if keep:
            log.info("kept the evaluation database %s", name)
        else:
            with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=5) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                              .format(sql.Identifier(name)))
