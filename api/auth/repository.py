"""SQL of users and refresh tokens. Functions take a connection and never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from api.auth.models import User

Conn = psycopg.Connection[Any]

USER_COLUMNS = sql.SQL("id, username, display_name, role, created_at, disabled_at, "
                       "failed_sign_ins, blocked_until, password_hash")
INSERT_USER = sql.SQL("""
INSERT INTO users (username, display_name, role, password_hash, created_at)
VALUES (%s, %s, %s, %s, %s)
RETURNING {columns}""").format(columns=USER_COLUMNS)
USER_BY_USERNAME = sql.SQL("SELECT {columns} FROM users WHERE username = %s").format(
    columns=USER_COLUMNS)
# Held while a sign-in is checked: concurrent tries for one user are counted one after another.
USER_BY_USERNAME_FOR_UPDATE = sql.SQL(
    "SELECT {columns} FROM users WHERE username = %s FOR UPDATE").format(columns=USER_COLUMNS)
USER_BY_ID = sql.SQL("SELECT {columns} FROM users WHERE id = %s").format(columns=USER_COLUMNS)
USERS = sql.SQL("SELECT {columns} FROM users ORDER BY username").format(columns=USER_COLUMNS)
RECORD_FAILURE = "UPDATE users SET failed_sign_ins = %s, blocked_until = %s WHERE id = %s"
RECORD_SUCCESS = """
UPDATE users SET failed_sign_ins = 0, blocked_until = NULL,
       password_hash = coalesce(%s, password_hash)
 WHERE id = %s"""
SET_DISABLED = "UPDATE users SET disabled_at = %s WHERE id = %s"
SET_PASSWORD = """
UPDATE users SET password_hash = %s, failed_sign_ins = 0, blocked_until = NULL WHERE id = %s"""

INSERT_REFRESH = """
INSERT INTO refresh_tokens (id, user_id, family, token_hash, issued_at, expires_at)
VALUES (%s, %s, %s, %s, %s, %s)"""
REFRESH_BY_HASH = """
SELECT id, user_id, family, expires_at, revoked_at FROM refresh_tokens
 WHERE token_hash = %s FOR UPDATE"""
REVOKE_REFRESH = "UPDATE refresh_tokens SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL"
REVOKE_FAMILY = """
UPDATE refresh_tokens SET revoked_at = %s WHERE family = %s AND revoked_at IS NULL"""
REVOKE_USER_REFRESH = """
UPDATE refresh_tokens SET revoked_at = %s WHERE user_id = %s AND revoked_at IS NULL"""


@dataclass(frozen=True)
class RefreshRow:
    id: UUID
    user_id: UUID
    family: UUID
    expires_at: datetime
    revoked_at: datetime | None


def _user(conn: Conn, query: sql.Composed, params: tuple[Any, ...]) -> User | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(query, params).fetchone()
    return None if row is None else User(**row)


def insert_user(conn: Conn, username: str, display_name: str, role: str, password_hash: str,
                now: datetime) -> User:
    user = _user(conn, INSERT_USER, (username, display_name, role, password_hash, now))
    assert user is not None
    return user


def user_by_username(conn: Conn, username: str, *, for_update: bool = False) -> User | None:
    query = USER_BY_USERNAME_FOR_UPDATE if for_update else USER_BY_USERNAME
    return _user(conn, query, (username,))


def user_by_id(conn: Conn, user_id: UUID) -> User | None:
    return _user(conn, USER_BY_ID, (user_id,))


def users(conn: Conn) -> list[User]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [User(**row) for row in cur.execute(USERS).fetchall()]


def record_failure(conn: Conn, user_id: UUID, failed: int, blocked_until: datetime | None) -> None:
    conn.execute(RECORD_FAILURE, (failed, blocked_until, user_id))


def record_success(conn: Conn, user_id: UUID, new_hash: str | None) -> None:
    conn.execute(RECORD_SUCCESS, (new_hash, user_id))


def set_disabled(conn: Conn, user_id: UUID, at: datetime | None) -> None:
    conn.execute(SET_DISABLED, (at, user_id))


def set_password(conn: Conn, user_id: UUID, password_hash: str) -> None:
    conn.execute(SET_PASSWORD, (password_hash, user_id))


def insert_refresh(conn: Conn, token_id: UUID, user_id: UUID, family: UUID, token_hash: bytes,
                   issued_at: datetime, expires_at: datetime) -> None:
    conn.execute(INSERT_REFRESH, (token_id, user_id, family, token_hash, issued_at, expires_at))


def refresh_by_hash(conn: Conn, token_hash: bytes) -> RefreshRow | None:
    """The refresh token with this hash, locked: it is used once."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(REFRESH_BY_HASH, (token_hash,)).fetchone()
    return None if row is None else RefreshRow(**row)


def revoke_refresh(conn: Conn, token_id: UUID, at: datetime) -> None:
    conn.execute(REVOKE_REFRESH, (at, token_id))


def revoke_family(conn: Conn, family: UUID, at: datetime) -> None:
    conn.execute(REVOKE_FAMILY, (at, family))


def revoke_user_refresh(conn: Conn, user_id: UUID, at: datetime) -> None:
    conn.execute(REVOKE_USER_REFRESH, (at, user_id))
