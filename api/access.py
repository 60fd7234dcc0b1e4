"""Who may see what: the one relation check that every route touching a citizen, a device, an
alert or a care team goes through (docs/access.md).

The relation is one SQL subquery, `visible(caller, kind, now)`: the citizens whose data of
`kind` the caller may see, each with the window of measured time they may see.

- an administrator, and the local operator while sign-in is not required: every citizen;
- a nurse: the citizens of the care teams she is a member of (team_members);
- a citizen: themselves (users.citizen_id);
- a relative: the citizens whose proxy grants `kind`, while it is in force, and only what was
  measured within it;
- a project lead or a service account: no citizen (project leads see pseudonymised aggregates,
  not citizens).

Single look-ups and lists use the same subquery, so a list is filtered by the relation in its
query, never after it. A citizen, device, alert or team outside the relation answers exactly
like one that does not exist (404); a relation that allows looking but not changing answers 403.
A disabled user loses every relation at once, whatever tokens are still about. Refusals are
logged."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, get_args
from uuid import UUID

import psycopg
from fastapi import Depends
from psycopg import sql
from psycopg.rows import tuple_row

from alerts.errors import AlertNotFound, TeamNotFound
from api import audit
from api.auth.errors import NotAllowed
from api.deps import Caller, CallerDep, DbDep, NowDep
from core.clock import FAR_FUTURE, FAR_PAST
from devices.errors import CitizenNotFound, DeviceNotFound

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]
# What a proxy grants (migrations/0012): readings, alerts, devices, and care (plans,
# thresholds, pauses, the care team).
Kind = Literal["readings", "alerts", "devices", "care"]
KINDS: tuple[str, ...] = get_args(Kind)
# Who may change a citizen's care and alerts (among those who may see them).
CARE_STAFF = frozenset({"administrator", "nurse"})

_ACTIVE_USER = "EXISTS (SELECT 1 FROM users u WHERE u.id = %(access_user)s AND u.disabled_at IS NULL)"
_EVERY = """
SELECT c.id AS citizen_id, %(access_far_past)s::timestamptz AS since,
       %(access_far_future)s::timestamptz AS until
  FROM citizens c"""
_RELATIONS: dict[str, str] = {
    "administrator": _EVERY + " WHERE {active}",
    "nurse": _EVERY + """
  JOIN team_members m ON m.care_team_id = c.care_team_id AND m.user_id = %(access_user)s
 WHERE {active}""",
    "citizen": _EVERY + """
  JOIN users u ON u.citizen_id = c.id AND u.id = %(access_user)s AND u.disabled_at IS NULL""",
    "relative": """
SELECT p.citizen_id, min(lower(p.valid)) AS since,
       max(coalesce(upper(p.valid), %(access_far_future)s)) AS until
  FROM proxies p
 WHERE p.relative_id = %(access_user)s AND %(access_kind)s = ANY(p.kinds)
   AND p.revoked_at IS NULL AND p.valid @> %(access_now)s::timestamptz AND {active}
 GROUP BY p.citizen_id""",
}
_NOBODY = """
SELECT NULL::uuid AS citizen_id, NULL::timestamptz AS since, NULL::timestamptz AS until
 WHERE false"""
_TEAMS = """
SELECT t.id FROM care_teams t WHERE {relation}"""
_TEAM_RELATIONS: dict[str, str] = {
    "administrator": "{active}",
    "nurse": "t.id IN (SELECT m.care_team_id FROM team_members m WHERE m.user_id = "
             "%(access_user)s) AND {active}",
}
ALERT_CITIZEN = "SELECT citizen_id, first_measured_at FROM alerts WHERE id = %s"
ALERT_TIMES = "SELECT id, first_measured_at FROM alerts WHERE id = ANY(%s)"
DEVICE_HOLDER = """
SELECT p.citizen_id FROM device_pairings p WHERE p.device_id = %s AND upper_inf(p.valid)"""
DEVICE_EXISTS = "SELECT 1 FROM devices WHERE id = %s"


@dataclass(frozen=True)
class Window:
    """The measured times of a citizen's data the caller may see."""

    since: datetime
    until: datetime

    def clip(self, start: datetime, end: datetime) -> tuple[datetime, datetime]:
        return max(start, self.since), min(end, self.until)

    def holds(self, at: datetime) -> bool:
        return self.since <= at < self.until


EVERYTHING = Window(FAR_PAST, FAR_FUTURE)


def _sees_everything(caller: Caller) -> bool:
    return caller.is_local_operator


def visible(caller: Caller, kind: Kind, now: datetime) -> tuple[sql.Composable, dict[str, Any]]:
    """The relation: a subquery of (citizen_id, since, until) and its parameters (all named
    access_*, so they combine with a query's own)."""
    params = {"access_user": _user_id(caller), "access_kind": kind, "access_now": now,
              "access_far_past": FAR_PAST, "access_far_future": FAR_FUTURE}
    if _sees_everything(caller):
        return sql.SQL(_EVERY), params
    return _with_active(_RELATIONS.get(caller.role, _NOBODY)), params


def citizen(conn: Conn, caller: Caller, citizen_id: UUID, kind: Kind, now: datetime, *,
            change: bool = False, export: bool = False, what: str | None = None) -> Window:
    """What the caller may see of the citizen's `kind` of data; CitizenNotFound when nothing
    (also when the citizen does not exist), NotAllowed when `change` and the caller may only
    look. The look is recorded (api/audit.py) as a read, a change or an export of `what`
    (default: the kind)."""
    window = _window(conn, caller, citizen_id, kind, now)
    if change and not _may_change(caller):
        _refused(caller, "change", kind, citizen_id)
        raise NotAllowed(f"a {caller.role} may look at this but not change it")
    action: audit.Action = "change" if change else "export" if export else "read"
    audit.record(conn, caller, action, what or kind, [citizen_id], now)
    return window


def _window(conn: Conn, caller: Caller, citizen_id: UUID, kind: Kind, now: datetime) -> Window:
    relation, params = visible(caller, kind, now)
    query = sql.SQL("SELECT since, until FROM ({relation}) v WHERE v.citizen_id = %(citizen)s"
                    ).format(relation=relation)
    row = _one(conn, query, {**params, "citizen": citizen_id})
    if row is None:
        _refused(caller, "see", kind, citizen_id)
        raise CitizenNotFound(f"no citizen {citizen_id}")
    return Window(row[0], row[1])


def windows(conn: Conn, caller: Caller, citizens: Iterable[UUID], kind: Kind,
            now: datetime) -> dict[UUID, Window]:
    """Of `citizens`, those whose `kind` of data the caller may see now, with what they may
    see of each (the relation, as for one citizen; a stream asks for the citizens of its
    events). Refusals are not logged one by one: a list simply leaves them out."""
    relation, params = visible(caller, kind, now)
    query = sql.SQL("SELECT citizen_id, since, until FROM ({relation}) v"
                    " WHERE v.citizen_id = ANY(%(citizens)s)").format(relation=relation)
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(query, {**params, "citizens": list(set(citizens))}).fetchall()
    return {row[0]: Window(row[1], row[2]) for row in rows}


def alert_times(conn: Conn, alert_ids: Iterable[int]) -> dict[int, datetime]:
    """When each alert's data was first measured: a relative sees an alert only when that lies
    within their proxy (as `alert`)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(ALERT_TIMES, (list(set(alert_ids)),)).fetchall()
    return {int(row[0]): row[1] for row in rows}


def alert(conn: Conn, caller: Caller, alert_id: int, now: datetime, *,
          change: bool = False) -> None:
    """AlertNotFound unless the caller may see the alert's citizen's alerts (and, for a
    relative, the alert began within the proxy); NotAllowed for a change by a looker."""
    row = _one(conn, ALERT_CITIZEN, (alert_id,))
    if row is None:
        raise AlertNotFound(f"no alert {alert_id}")
    try:
        window = _window(conn, caller, row[0], "alerts", now)
    except CitizenNotFound:
        raise AlertNotFound(f"no alert {alert_id}") from None
    if not window.holds(row[1]):
        _refused(caller, "see", "alerts", row[0])
        raise AlertNotFound(f"no alert {alert_id}")
    if change and not _may_change(caller):  # only once it is known the caller may see it
        _refused(caller, "change", "alerts", row[0])
        raise NotAllowed(f"a {caller.role} may look at this but not change it")
    audit.record(conn, caller, "change" if change else "read", "alerts", [row[0]], now)


def device(conn: Conn, caller: Caller, device_id: str, now: datetime) -> None:
    """DeviceNotFound unless the caller may see the devices of the device's holder (a device
    nobody holds: administrators only)."""
    holder = _one(conn, DEVICE_HOLDER, (device_id,))
    if holder is None:
        if _one(conn, DEVICE_EXISTS, (device_id,)) is None or not administers(caller):
            raise DeviceNotFound(f"no device {device_id!r}")
        return
    try:
        citizen(conn, caller, holder[0], "devices", now)
    except CitizenNotFound:
        raise DeviceNotFound(f"no device {device_id!r}") from None


def audit_trail(conn: Conn, caller: Caller, citizen_id: UUID, now: datetime) -> bool:
    """CitizenNotFound unless the caller is the citizen or an administrator: the record of who
    looked at a citizen's data is theirs, not their relatives' or nurses'. True when the caller
    may see who looked (administrators), False when only when, in which role and why."""
    if caller.role != "citizen" and not administers(caller):
        _refused(caller, "see", "audit", citizen_id)
        raise CitizenNotFound(f"no citizen {citizen_id}")
    _window(conn, caller, citizen_id, "readings", now)  # a citizen: only themselves
    audit.record(conn, caller, "read", "audit", [citizen_id], now)
    return administers(caller)


def archive(conn: Conn, caller: Caller, citizen_id: UUID, now: datetime) -> bool:
    """CitizenNotFound unless the caller is the citizen or an administrator: the archive of
    everything held about a citizen is theirs (api/citizen_export.py). Recorded as an export.
    True when the caller may see who looked (administrators), as for `audit_trail`."""
    if caller.role != "citizen" and not administers(caller):
        _refused(caller, "export", "archive", citizen_id)
        raise CitizenNotFound(f"no citizen {citizen_id}")
    _window(conn, caller, citizen_id, "readings", now)  # a citizen: only themselves
    audit.record(conn, caller, "export", "archive", [citizen_id], now)
    return administers(caller)


def visible_teams(caller: Caller) -> tuple[sql.Composable, dict[str, Any]]:
    """The care teams the caller works in: a subquery of their ids, and its parameters."""
    if _sees_everything(caller):
        relation = "true"
    else:
        relation = _TEAM_RELATIONS.get(caller.role, "false")
    return (sql.SQL(_TEAMS).format(relation=_with_active(relation)),
            {"access_user": _user_id(caller)})


def team(conn: Conn, caller: Caller, team_id: UUID, *, change: bool = False) -> None:
    """TeamNotFound unless the caller works in the team (administrators: every team)."""
    relation, params = visible_teams(caller)
    query = sql.SQL("SELECT 1 FROM ({relation}) v WHERE v.id = %(team)s").format(relation=relation)
    if _one(conn, query, {**params, "team": team_id}) is None:
        _refused(caller, "see", "team", team_id)
        raise TeamNotFound(f"no care team {team_id}")
    if change and not _may_change(caller):
        raise NotAllowed(f"a {caller.role} may not change this team")


def _one(conn: Conn, query: sql.Composed | str, params: Any) -> tuple[Any, ...] | None:
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchone()


def _with_active(query: str) -> sql.Composable:
    """The query with its {active} (the caller's user is not disabled) filled in."""
    return sql.SQL(query).format(active=sql.SQL(_ACTIVE_USER))


def administers(caller: Caller) -> bool:
    return _sees_everything(caller) or caller.role == "administrator"


def _may_change(caller: Caller) -> bool:
    return _sees_everything(caller) or caller.role in CARE_STAFF


def _user_id(caller: Caller) -> UUID | None:
    return None if _sees_everything(caller) else UUID(caller.subject)


def _refused(caller: Caller, action: str, what: str, subject: UUID) -> None:
    log.info("access refused: %s %s (%s) may not %s %s of %s", caller.role, caller.subject,
             caller.username, action, what, subject)


# --- as route dependencies: a route names what it does with the path's citizen -------------

def _on_path_citizen(kind: Kind, *, change: bool, what: str | None = None) -> Any:
    def check(citizen_id: UUID, conn: DbDep, caller: CallerDep, now: NowDep) -> Window:
        return citizen(conn, caller, citizen_id, kind, now, change=change, what=what)
    return Depends(check)


SeesCare = Annotated[Window, _on_path_citizen("care", change=False)]
ChangesCare = Annotated[Window, _on_path_citizen("care", change=True)]
# Who may see the citizen's data (proxies): changed by those who may change their care.
ChangesAccess = Annotated[Window, _on_path_citizen("care", change=True, what="access")]
