"""The audit record: every look at and change of a citizen's data, who, in which role, what,
which citizen, when and why (docs/access.md; table audit_log, migrations/0013).

The relation check (api/access.py) writes it when it lets a caller at a citizen's data, and a
list writes it for every citizen whose data it returns, in the request's transaction: the
request commits before its answer is sent (api/deps.db), so an answer never goes out without
its record, and a record that cannot be written fails the request (AuditUnavailable, 503).
A request records each citizen once (the unique key request_id, citizen_id), however many
checks it passes."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import psycopg
from psycopg.rows import class_row

from api.deps import Caller
from core.db import describe_error
from core.errors import TelecareError

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]
Action = Literal["read", "search", "export", "change"]

_RECORD = """
INSERT INTO audit_log (at, request_id, user_id, username, role, action, what, citizen_id,
                       purpose, route)
SELECT %(at)s, %(request_id)s, %(user_id)s, %(username)s, %(role)s, %(action)s, %(what)s,
       citizen_id, %(purpose)s, %(route)s
  FROM unnest(%(citizens)s::uuid[]) AS c (citizen_id)
    ON CONFLICT (request_id, citizen_id) DO NOTHING"""
_ENTRIES = """
SELECT id, at, user_id, username, role, action, what, citizen_id, purpose, route
  FROM audit_log
 WHERE (%(citizen)s::uuid IS NULL OR citizen_id = %(citizen)s)
   AND (%(user_id)s::uuid IS NULL OR user_id = %(user_id)s)
   AND at >= %(since)s AND at < %(until)s
   AND (%(before)s::bigint IS NULL OR id < %(before)s)
 ORDER BY id DESC
 LIMIT %(limit)s"""


class AuditUnavailable(TelecareError):
    """The audit record could not be written, so the data is not shown."""

    code = "audit_unavailable"


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    user_id: UUID | None
    username: str | None
    role: str
    action: str
    what: str
    citizen_id: UUID | None
    purpose: str
    route: str


def record(conn: Conn, caller: Caller, action: Action, what: str,
           citizens: Iterable[UUID | None], now: datetime) -> None:
    """One record per citizen (None: a search that found nobody) in the request's transaction."""
    ids = list(dict.fromkeys(citizens))
    params = {"at": now, "request_id": caller.request_id, "user_id": _user_id(caller),
              "username": caller.username, "role": caller.role, "action": action, "what": what,
              "purpose": caller.purpose or "administration", "route": caller.route or "internal",
              "citizens": ids}
    try:
        with conn.transaction():  # a savepoint: the failure is ours to report, not a 500
            conn.execute(_RECORD, params)
    except psycopg.Error as exc:
        log.error("audit record not written (%s): refusing the request", describe_error(exc))
        raise AuditUnavailable("the audit record could not be written; nothing is shown") from None


def searched(conn: Conn, caller: Caller, what: str, citizens: Iterable[UUID],
             now: datetime) -> None:
    """A list's record: every citizen whose data it returns, or one record that it found none."""
    ids = list(dict.fromkeys(citizens))
    record(conn, caller, "search", what, ids or [None], now)


def entries(conn: Conn, *, citizen: UUID | None, user_id: UUID | None, since: datetime,
            until: datetime, before: int | None, limit: int) -> list[AuditEntry]:
    """Newest first; page on with `before` = the last id seen."""
    with conn.cursor(row_factory=class_row(AuditEntry)) as cur:
        return cur.execute(_ENTRIES, {"citizen": citizen, "user_id": user_id, "since": since,
                                      "until": until, "before": before,
                                      "limit": limit}).fetchall()


def _user_id(caller: Caller) -> UUID | None:
    return None if caller.is_local_operator else UUID(caller.subject)
