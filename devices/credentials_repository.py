"""SQL of device credentials (migrations/0014). Functions take a connection and never commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

Conn = psycopg.Connection[Any]

# The device row is locked for the change: two administrators rotating at once take turns, and
# the second rotates the first one's new secret instead of failing on the unique index.
LOCK_DEVICE = "SELECT id FROM devices WHERE id = %s FOR UPDATE"
INSERT_CREDENTIAL = """
INSERT INTO device_credentials (device_id, password_hash, issued_at, issued_by)
VALUES (%s, %s, %s, %s)
RETURNING id, device_id, issued_at, issued_by, revoked_at, revoked_by"""
REVOKE_IN_FORCE = """
UPDATE device_credentials SET revoked_at = %(at)s, revoked_by = %(by)s
 WHERE device_id = %(device_id)s AND revoked_at IS NULL
RETURNING id"""
CREDENTIALS_OF = """
SELECT id, device_id, issued_at, issued_by, revoked_at, revoked_by
  FROM device_credentials
 WHERE device_id = %s
 ORDER BY issued_at DESC, id DESC"""
# What the broker's password file and ACL are written from: every credential in force, by id
# so that the files come out the same for the same registry.
IN_FORCE = """
SELECT device_id, password_hash
  FROM device_credentials
 WHERE revoked_at IS NULL
 ORDER BY device_id"""


def lock_device(conn: Conn, device_id: str) -> bool:
    """Lock the device's registry row for this transaction; False when there is none."""
    return conn.execute(LOCK_DEVICE, (device_id,)).fetchone() is not None


def insert_credential(conn: Conn, device_id: str, password_hash: str, at: datetime,
                      by: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(INSERT_CREDENTIAL, (device_id, password_hash, at, by)).fetchone()
    assert row is not None
    return row


def revoke_in_force(conn: Conn, device_id: str, at: datetime, by: str) -> bool:
    """Revoke the device's credential in force; False when it had none."""
    return conn.execute(REVOKE_IN_FORCE, {"device_id": device_id, "at": at, "by": by}
                        ).fetchone() is not None


def credentials_of(conn: Conn, device_id: str) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(CREDENTIALS_OF, (device_id,)).fetchall()


def in_force(conn: Conn) -> list[tuple[str, str]]:
    """(device_id, password_hash) of every credential in force, by device id."""
    return [(device_id, password_hash)
            for device_id, password_hash in conn.execute(IN_FORCE).fetchall()]
