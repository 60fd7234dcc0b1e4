"""`telecare citizens erase`: a citizen's erasure within the retention rules, as the database
owner (the API's role may not delete readings). The plan is api/erasure.py's, the same the
administrators' dry run shows; here it is carried out in one transaction: processing stops
(devices taken back, plans ended, proxies revoked, the citizen's user disabled, pilot
enrolments ended, queued evaluations dropped), what is past its retention is deleted, the name
is replaced when nothing that needs it is kept, and the erasure is recorded in the audit log."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from alerts import service as alerts_service
from api import audit, registry, relations
from api.auth import service as auth_service
from api.deps import LOCAL_OPERATOR, Caller
from api.erasure import ERASED_NAME, KINDS, Kind, Retention, last_entry, plan
from api.schemas import ErasureReport
from core import locks
from devices import service as devices_service
from pilots import service as pilots_service

Conn = psycopg.Connection[Any]



def cli_caller() -> Caller:
    """The operator at the command line, in a request of its own (the audit log records a
    citizen once per request: a dry run and the erasure after it are two)."""
    return replace(LOCAL_OPERATOR, request_id=uuid4(), route="telecare citizens erase",
                   purpose="citizen_request")


_ERASURE_LOCK = "SELECT pg_advisory_xact_lock(%s, hashtext(%s))"
_LOCK = "SELECT discharged_at FROM citizens WHERE id = %s FOR UPDATE"
_HELD = "SELECT device_id FROM device_pairings WHERE citizen_id = %s AND upper_inf(valid)"
_USER = "SELECT username FROM users WHERE citizen_id = %s AND disabled_at IS NULL"
_ENROLMENTS = """
SELECT pilot_id, id FROM pilot_enrolments
 WHERE citizen_id = %s AND (upper_inf(valid) OR upper(valid) > %s)"""
_DROP_QUEUED = "DELETE FROM evaluation_queue WHERE citizen_id = %s"
_DELETE = "DELETE FROM {table} t WHERE {condition}"
_GONE_ALERTS = "SELECT t.id FROM alerts t WHERE {condition}"
# An alert's dependants, before the alert (foreign keys).
_ALERT_DEPENDANTS = (
    """DELETE FROM webhook_attempts WHERE delivery_id IN (
         SELECT d.id FROM webhook_deliveries d JOIN alert_history h ON h.id = d.history_id
          WHERE h.alert_id = ANY(%(ids)s))""",
    """DELETE FROM webhook_deliveries WHERE history_id IN (
         SELECT id FROM alert_history WHERE alert_id = ANY(%(ids)s))""",
    "DELETE FROM alert_history WHERE alert_id = ANY(%(ids)s)",
    "DELETE FROM alert_findings WHERE alert_id = ANY(%(ids)s)",
    "DELETE FROM screen_messages WHERE alert_id = ANY(%(ids)s)",
    "DELETE FROM alerts WHERE id = ANY(%(ids)s)",
)
_FORGET_CITIZEN = "UPDATE citizens SET display_name = %s, conditions = '{}' WHERE id = %s"
_FORGET_USER = "UPDATE users SET display_name = %s WHERE citizen_id = %s"


def erase(conn: Conn, citizen_id: UUID, retention: Retention, now: datetime, *,
          dry_run: bool, caller: Caller | None = None) -> ErasureReport:
    """Erase the citizen at `now` as api/erasure.plan says (a dry run: only the plan); the
    report either way; CitizenNotFound. Audited: `change` (a dry run: `read`) of `erasure`."""
    caller = caller or cli_caller()
    with conn.transaction():
        entry = last_entry(conn, citizen_id)
        report = plan(conn, citizen_id, retention, now, dry_run=dry_run, anchor=entry)
        if dry_run:
            audit.record(conn, caller, "read", "erasure", [citizen_id], now)
            return report
        _stop_processing(conn, citizen_id, now)
        params = retention.params(citizen_id, now, entry)
        for kind in KINDS:
            _delete(conn, kind, params)
        if not report.identity_kept:
            conn.execute(_FORGET_CITIZEN, (ERASED_NAME, citizen_id))
            conn.execute(_FORGET_USER, (ERASED_NAME, citizen_id))
        audit.record(conn, caller, "change", "erasure", [citizen_id], now)
    return report


def _stop_processing(conn: Conn, citizen_id: UUID, now: datetime) -> None:
    with conn.cursor(row_factory=tuple_row) as cur:
        # Until this commits, no retraining stores baselines of hers and no requeue puts her
        # parked items back (core/locks.py).
        cur.execute(_ERASURE_LOCK, (locks.CITIZEN_ERASURE_CLASS, str(citizen_id)))
        (discharged_at,) = cur.execute(_LOCK, (citizen_id,)).fetchone() or (None,)
        held = [device for (device,) in cur.execute(_HELD, (citizen_id,))]
        users = [name for (name,) in cur.execute(_USER, (citizen_id,))]
        enrolments = cur.execute(_ENROLMENTS, (citizen_id, now)).fetchall()
    if discharged_at is None:
        registry.discharge(conn, citizen_id, now)
    else:  # discharged before, and given a device or a plan since
        for device in held:
            devices_service.unpair_device(conn, device, now)
        for assignment in alerts_service.plans_in_force(conn, [citizen_id], now).get(citizen_id, []):
            alerts_service.end_plan(conn, citizen_id, assignment.plan, now)
    for proxy in relations.proxies_of(conn, citizen_id):
        if proxy.revoked_at is None and (proxy.valid_until is None or proxy.valid_until > now):
            relations.revoke_proxy(conn, citizen_id, proxy.id, now)
    for username in users:
        auth_service.disable_user(conn, username, now)
    for pilot_id, enrolment_id in enrolments:
        pilots_service.end_enrolment(conn, pilot_id, enrolment_id, now)
    conn.execute(_DROP_QUEUED, (citizen_id,))


def _delete(conn: Conn, kind: Kind, params: dict[str, Any]) -> None:
    condition = kind.condition("<=")
    if kind.table == "alerts":
        with conn.cursor(row_factory=tuple_row) as cur:
            ids = [alert for (alert,) in cur.execute(
                sql.SQL(_GONE_ALERTS).format(condition=condition), params)]
        for statement in _ALERT_DEPENDANTS:
            conn.execute(statement, {"ids": ids})
        return
    conn.execute(sql.SQL(_DELETE).format(table=sql.Identifier(kind.table), condition=condition),
                 params)
