"""Setting up the relations api/access.py checks: a nurse's care teams, the citizen a citizen's
user is, and the proxies (fuldmagter) a citizen grants relatives. Functions take a connection
and never commit; errors are domain errors (api/problems.py maps them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import class_row, dict_row, tuple_row

from alerts.errors import TeamNotFound
from api.access import KINDS
from api.auth.errors import InvalidUser, UserConflict, UserNotFound
from core.errors import InvalidInput, NotFound
from devices.errors import CitizenNotFound

Conn = psycopg.Connection[Any]

USER_ROLE = "SELECT id, role FROM users WHERE username = %s"
TEAM_EXISTS = "SELECT 1 FROM care_teams WHERE id = %s"
CITIZEN_EXISTS = "SELECT 1 FROM citizens WHERE id = %s"
ADD_MEMBER = """
INSERT INTO team_members (user_id, care_team_id, added_at) VALUES (%s, %s, %s)
ON CONFLICT DO NOTHING"""
REMOVE_MEMBER = "DELETE FROM team_members WHERE user_id = %s AND care_team_id = %s"
LINK_CITIZEN = "UPDATE users SET citizen_id = %s WHERE id = %s"
INSERT_PROXY = """
INSERT INTO proxies (citizen_id, relative_id, kinds, valid, granted_by, granted_at)
VALUES (%s, %s, %s, tstzrange(%s, %s), %s, %s)
RETURNING id, citizen_id, relative_id, kinds, lower(valid) AS valid_from,
          upper(valid) AS valid_until, granted_by, granted_at, revoked_at"""
MEMBERS_OF = """
SELECT u.id AS user_id, u.username, u.display_name, m.added_at
  FROM team_members m JOIN users u ON u.id = m.user_id
 WHERE m.care_team_id = %s ORDER BY u.username"""
PROXIES_OF = """
SELECT id, citizen_id, relative_id, kinds, lower(valid) AS valid_from,
       upper(valid) AS valid_until, granted_by, granted_at, revoked_at
  FROM proxies WHERE citizen_id = %s ORDER BY id"""
REVOKE_PROXY = """
UPDATE proxies SET revoked_at = coalesce(revoked_at, %s) WHERE id = %s AND citizen_id = %s
RETURNING id, citizen_id, relative_id, kinds, lower(valid) AS valid_from,
          upper(valid) AS valid_until, granted_by, granted_at, revoked_at"""


class ProxyNotFound(NotFound):
    code = "proxy_not_found"


class InvalidProxy(InvalidInput):
    code = "invalid_proxy"


@dataclass(frozen=True)
class Proxy:
    id: int
    citizen_id: UUID
    relative_id: UUID
    kinds: list[str]
    valid_from: datetime
    valid_until: datetime | None
    granted_by: str
    granted_at: datetime
    revoked_at: datetime | None


def _user(conn: Conn, username: str, role: str) -> UUID:
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(USER_ROLE, (username,)).fetchone()
    if row is None:
        raise UserNotFound(f"no user {username!r}")
    user_id, actual = row
    if actual != role:
        raise InvalidUser(f"{username!r} is a {actual}, not a {role}")
    return UUID(str(user_id))


def _require(conn: Conn, query: str, key: UUID, error: Exception) -> None:
    with conn.cursor(row_factory=tuple_row) as cur:
        found = cur.execute(query, (key,)).fetchone()
    if found is None:
        raise error


def add_member(conn: Conn, username: str, team_id: UUID, now: datetime) -> None:
    """The nurse works in the team from now on (again: nothing changes)."""
    user_id = _user(conn, username, "nurse")
    _require(conn, TEAM_EXISTS, team_id, TeamNotFound(f"no care team {team_id}"))
    conn.execute(ADD_MEMBER, (user_id, team_id, now))


def remove_member(conn: Conn, username: str, team_id: UUID) -> None:
    conn.execute(REMOVE_MEMBER, (_user(conn, username, "nurse"), team_id))


def link_citizen(conn: Conn, username: str, citizen_id: UUID) -> None:
    """The citizen user `username` is the citizen `citizen_id` (and sees their own data)."""
    user_id = _user(conn, username, "citizen")
    _require(conn, CITIZEN_EXISTS, citizen_id, CitizenNotFound(f"no citizen {citizen_id}"))
    try:
        with conn.transaction():
            conn.execute(LINK_CITIZEN, (citizen_id, user_id))
    except psycopg.errors.UniqueViolation:
        raise UserConflict(f"citizen {citizen_id} already has a user") from None


def grant_proxy(conn: Conn, citizen_id: UUID, relative: str, kinds: list[str],
                valid_from: datetime, valid_until: datetime | None, granted_by: str,
                now: datetime) -> Proxy:
    """The relative may see the citizen's data of `kinds` measured within [valid_from,
    valid_until), while that lasts."""
    if not kinds or not set(kinds) <= set(KINDS):
        raise InvalidProxy(f"kinds are one or more of {', '.join(KINDS)}")
    if valid_until is not None and valid_until <= valid_from:
        raise InvalidProxy("a proxy ends after it starts")
    relative_id = _user(conn, relative, "relative")
    _require(conn, CITIZEN_EXISTS, citizen_id, CitizenNotFound(f"no citizen {citizen_id}"))
    with conn.cursor(row_factory=class_row(Proxy)) as cur:
        row = cur.execute(INSERT_PROXY, (citizen_id, relative_id, sorted(set(kinds)), valid_from,
                                         valid_until, granted_by, now)).fetchone()
    assert row is not None
    return row


def members_of(conn: Conn, team_id: UUID) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(MEMBERS_OF, (team_id,)).fetchall()


def proxies_of(conn: Conn, citizen_id: UUID) -> list[Proxy]:
    with conn.cursor(row_factory=class_row(Proxy)) as cur:
        return cur.execute(PROXIES_OF, (citizen_id,)).fetchall()


def revoke_proxy(conn: Conn, citizen_id: UUID, proxy_id: int, now: datetime) -> Proxy:
    """The proxy no longer holds (revoking again keeps the first time)."""
    with conn.cursor(row_factory=class_row(Proxy)) as cur:
        row = cur.execute(REVOKE_PROXY, (now, proxy_id, citizen_id)).fetchone()
    if row is None:
        raise ProxyNotFound(f"citizen {citizen_id} has no proxy {proxy_id}")
    return row
