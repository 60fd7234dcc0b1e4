"""SQL of users and refresh tokens. Functions take a connection and never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from api.auth.models import User

Conn = psycopg.Connection[Any]

USER_COLUMNS = sql.SQL("id, username, display_name, role, created_at, disabled_at, "
                       "token_generation, password_hash")
INSERT_USER = sql.SQL("""
INSERT INTO users (username, display_name, role, password_hash, created_at)
VALUES (%s, %s, %s, %s, %s)
RETURNING {columns}""").format(columns=USER_COLUMNS)
USER_BY_USERNAME = sql.SQL("SELECT {columns} FROM users WHERE username = %s").format(
    columns=USER_COLUMNS)
# Held by a password change or a disabling, and shared by a refresh: a refresh running beside
# them finishes first (and its token is revoked with the rest) or sees the change.
USER_BY_USERNAME_FOR_UPDATE = sql.SQL(
    "SELECT {columns} FROM users WHERE username = %s FOR UPDATE").format(columns=USER_COLUMNS)
USER_BY_ID_FOR_SHARE = sql.SQL("SELECT {columns} FROM users WHERE id = %s FOR SHARE").format(
    columns=USER_COLUMNS)
USER_BY_ID = sql.SQL("SELECT {columns} FROM users WHERE id = %s").format(columns=USER_COLUMNS)
USERS = sql.SQL("SELECT {columns} FROM users ORDER BY username").format(columns=USER_COLUMNS)
BLOCKED_UNTIL = "SELECT blocked_until FROM sign_in_failures WHERE username = %s"
# One more failure in a row, counted atomically (two tries at once are two failures).
COUNT_FAILURE = """
INSERT INTO sign_in_failures AS f (username, failures, last_failed_at) VALUES (%s, 1, %s)
ON CONFLICT (username) DO UPDATE SET failures = f.failures + 1,
                                     last_failed_at = excluded.last_failed_at
RETURNING failures"""
SET_BLOCKED = "UPDATE sign_in_failures SET blocked_until = %s WHERE username = %s"
CLEAR_FAILURES = "DELETE FROM sign_in_failures WHERE username = %s"
BLOCKED_USERNAMES = "SELECT username FROM sign_in_failures WHERE blocked_until > %s"
SET_HASH = "UPDATE users SET password_hash = %s WHERE id = %s"
SET_DISABLED = "UPDATE users SET disabled_at = %s WHERE id = %s"
# Every access token issued before is void from this commit on (api/deps.py checks the claim).
END_ACCESS_TOKENS = "UPDATE users SET token_generation = token_generation + 1 WHERE id = %s"


INSERT_REFRESH = """
INSERT INTO refresh_tokens (id, user_id, family, token_hash, issued_at, expires_at)
VALUES (%s, %s, %s, %s, %s, %s)"""
REFRESH_BY_HASH = """
SELECT id, user_id, family, expires_at, revoked_at FROM refresh_tokens
 WHERE token_hash = %s FOR UPDATE"""
REVOKE_REFRESH = "UPDATE refresh_tokens SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL"
REVOKE_FAMILY = """
UPDATE refresh_tokens SET revoked_at = %s WHERE family = %s AND revoked_at IS NULL"""
# Refresh tokens a day past their expiry (a revoked one stays until then: sent again, it still
# ends its family), and failure counts a day old that hold nothing up.
PURGE_REFRESH = "DELETE FROM refresh_tokens WHERE expires_at < %s"
PURGE_FAILURES = """
DELETE FROM sign_in_failures
 WHERE last_failed_at < %(before)s AND (blocked_until IS NULL OR blocked_until < %(before)s)"""
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


def user_by_id(conn: Conn, user_id: UUID, *, for_share: bool = False) -> User | None:
    return _user(conn, USER_BY_ID_FOR_SHARE if for_share else USER_BY_ID, (user_id,))


def users(conn: Conn) -> list[User]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [User(**row) for row in cur.execute(USERS).fetchall()]


def _scalar(conn: Conn, query: str, params: tuple[Any, ...]) -> Any:
    """The first column of the first row, None without a row (whatever the connection's row
    factory: pool connections give dicts)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(query, params).fetchone()
    return None if row is None else row[0]


def blocked_until(conn: Conn, username: str) -> datetime | None:
    until: datetime | None = _scalar(conn, BLOCKED_UNTIL, (username,))
    return until


def count_failure(conn: Conn, username: str, at: datetime) -> int:
    """The failures in a row for `username`, this one included."""
    return int(_scalar(conn, COUNT_FAILURE, (username, at)))


def set_blocked(conn: Conn, username: str, until: datetime | None) -> None:
    conn.execute(SET_BLOCKED, (until, username))


def clear_failures(conn: Conn, username: str) -> None:
    conn.execute(CLEAR_FAILURES, (username,))


def blocked_usernames(conn: Conn, at: datetime) -> set[str]:
    with conn.cursor(row_factory=tuple_row) as cur:
        return {str(row[0]) for row in cur.execute(BLOCKED_USERNAMES, (at,))}


def set_password_hash(conn: Conn, user_id: UUID, password_hash: str) -> None:
    conn.execute(SET_HASH, (password_hash, user_id))


def set_disabled(conn: Conn, user_id: UUID, at: datetime | None) -> None:
    conn.execute(SET_DISABLED, (at, user_id))


def end_access_tokens(conn: Conn, user_id: UUID) -> None:
    conn.execute(END_ACCESS_TOKENS, (user_id,))


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


def purge_before(conn: Conn, before: datetime) -> int:
    """Delete refresh tokens and failure counts that ended before `before`; how many."""
    refresh = conn.execute(PURGE_REFRESH, (before,)).rowcount
    failures = conn.execute(PURGE_FAILURES, {"before": before}).rowcount
    return refresh + failures
