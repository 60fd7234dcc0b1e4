"""Least privilege of the API's database role (core/roles.py), as PostgreSQL enforces it: the
API works under telecare_api, which may not delete from the registry (a citizen is discharged
and a pairing ended, never deleted) and may not read the hashes of device credentials, though
it writes them and reads every other column."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from core.roles import apply_privileges, process_dsn
from devices import credentials
from tests.conftest import new_device, only_on

pytestmark = only_on("postgres")  # privileges do not depend on the storage backend

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
NEVER_DELETED = ("citizens", "care_teams", "devices", "device_pairings", "citizen_plans",
                 "escalation_policies")
CREDENTIAL_COLUMNS = "id, device_id, issued_at, issued_by, revoked_at, revoked_by"


@pytest.fixture
def api(database: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection as the API makes it: switched to telecare_api when it connects."""
    with psycopg.connect(process_dsn(database, "api"), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("telecare_api",)
        yield conn


@pytest.mark.parametrize("table", NEVER_DELETED)
def test_the_api_role_may_not_delete_from_the_registry(api: psycopg.Connection[Any],
                                                       table: str) -> None:
    assert api.execute(f"SELECT count(*) >= 0 FROM {table}").fetchone() == (True,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        api.execute(f"DELETE FROM {table} WHERE false")


def test_the_api_role_writes_device_credentials_but_cannot_read_their_hashes(
        api: psycopg.Connection[Any], conn: psycopg.Connection[Any]) -> None:
    device, _ = new_device(conn, "bp_monitor", None)
    issued = credentials.issue(api, device, "test", NOW)  # as the API route does
    rotated = credentials.rotate(api, device, "test", NOW)
    assert rotated.secret != issued.secret
    assert [c.in_force for c in credentials.credentials(api, device)] == [True, False]
    assert api.execute(f"SELECT {CREDENTIAL_COLUMNS} FROM device_credentials WHERE device_id = %s",
                       (device,)).fetchall()
    for query in ("SELECT password_hash FROM device_credentials",
                  "SELECT * FROM device_credentials",
                  "SELECT id FROM device_credentials WHERE password_hash LIKE '$7$%'"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            api.execute(query)
    stored = conn.execute("SELECT count(*) FROM device_credentials WHERE device_id = %s"
                          " AND password_hash LIKE '$7$%%'", (device,)).fetchone()
    assert stored == (2,)  # the owner (telecare broker config) reads them


def test_the_hidden_column_stays_hidden_when_privileges_are_applied_again(
        conn: psycopg.Connection[Any]) -> None:
    apply_privileges(conn)  # what every migration ends with
    apply_privileges(conn)

    def may(column: str) -> bool:
        row = conn.execute("SELECT has_column_privilege('telecare_api', 'device_credentials',"
                           " %s, 'SELECT')", (column,)).fetchone()
        assert row is not None
        return bool(row[0])

    assert not may("password_hash")
    assert all(may(c.strip()) for c in CREDENTIAL_COLUMNS.split(","))
    row = conn.execute("SELECT has_table_privilege('telecare_api', 'citizens', 'DELETE'),"
                       " has_table_privilege('telecare_api', 'device_credentials', 'INSERT')"
                       ).fetchone()
    assert row == (False, True)
