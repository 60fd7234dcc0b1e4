"""Process roles as logins of their own (`telecare migrate` with TELECARE_DATABASE_API_PASSWORD,
_ALERTS_PASSWORD and _INGEST_PASSWORD), on the real PostgreSQL: a process that connects as its
role cannot switch to the owner, as one that logs in as the owner and switches role could.

Roles belong to the cluster, so the test leaves the process roles as the migrations make them:
without login."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from core.roles import ROLES

LOGINS = tuple(ROLES.values())


@pytest.fixture
def without_logins(postgres_database: str) -> Iterator[str]:
    def reset() -> None:
        with psycopg.connect(postgres_database, autocommit=True) as conn:
            for role in LOGINS:
                conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN PASSWORD NULL").format(
                    sql.Identifier(role)))
    reset()
    try:
        yield postgres_database
    finally:
        reset()


def _as(dsn: str, role: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(make_conninfo(dsn, user=role, password="given"), autocommit=True)


def test_migrate_makes_the_process_roles_logins_that_cannot_reach_the_owner(
        without_logins: str) -> None:
    with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
        _as(without_logins, ROLES["api"]).close()
    done = subprocess.run(
        [sys.executable, "-m", "telecare.cli", "migrate"], capture_output=True, text=True,
        timeout=120, check=True,
        env={**os.environ, "TELECARE_DATABASE_URL": without_logins,
             "TELECARE_STORAGE": "postgres", "TELECARE_DATABASE_API_PASSWORD": "api-secret",
             "TELECARE_DATABASE_ALERTS_PASSWORD": "alerts-secret",
             "TELECARE_DATABASE_INGEST_PASSWORD": "ingest-secret"})
    assert "logins: telecare_alerts, telecare_api, telecare_ingest" in done.stdout
    for role in LOGINS:
        with _as(without_logins, role) as conn:
            conn.execute("RESET ROLE")
            assert conn.execute("SELECT current_user").fetchone() == (role,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("UPDATE audit_log SET purpose = purpose")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SET ROLE postgres")
