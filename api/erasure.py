"""Erasure within the retention rules (docs/access.md, "Citizen rights"): what of a citizen's
data is past its retention and goes, what is within it and stays (with the reason and the date
it may go), and how processing stops. One plan, computed here, is both the administrators'
dry run over the API and what `telecare citizens erase` executes as the owner
(telecare/erasure.py): the API's database role may not delete readings.

Each kind of data has its retention in days (core/settings.py, TELECARE_RETENTION_*). The kinds
of the care record (readings, device events, devices, alerts, screen messages, plans,
thresholds, pauses) count it, by default, from the last entry in the citizen's record, as the
Danish rule for patient records does (at least 10 years after the last entry); the proxies and
the audit log of look-ups from their own time. Open things count from now: an erasure ends
them now (a plan in force, a device held, a proxy), and an alert not yet resolved is kept from
now. Every period is a condition on each row, `may_go <= now`, stated once per kind below, so
that the count in the report and the rows the erasure deletes cannot differ."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from api.schemas import ErasureKind, ErasureProcessing, ErasureReport
from core.settings import Settings
from devices.errors import CitizenNotFound

Conn = psycopg.Connection[Any]

CARE_RECORD_RULE = ("care record: autorisationsloven § 25, stk. 1 and journalføringsbekendtgørelsen "
                    "§ 15: at least 10 years after the last entry in the record")
AUDIT_RULE = ("log of look-ups: kept so the citizen can see who looked (GDPR art. 15); "
              "no fixed period since the GDPR (art. 5(1)(e)); 5 years, the longest the former "
              "sikkerhedsbekendtgørelse § 19 allowed an authority with a special need")
PROXY_RULE = "the proxy is the ground of a relative's look-ups: kept as long as the audit log"
DERIVED_RULE = ("derived or copied (what-if replays, personal baselines, items the alert engine "
                "could not evaluate): recomputable from the data kept; always erased")


@dataclass(frozen=True)
class Retention:
    """Days each kind of data is kept (TELECARE_RETENTION_*)."""

    readings: int
    events: int
    devices: int
    alerts: int
    care: int
    proxies: int
    audit: int
    from_last_entry: bool

    @classmethod
    def of(cls, settings: Settings) -> Retention:
        return cls(readings=settings.retention_readings_days,
                   events=settings.retention_events_days,
                   devices=settings.retention_devices_days,
                   alerts=settings.retention_alerts_days, care=settings.retention_care_days,
                   proxies=settings.retention_proxies_days, audit=settings.retention_audit_days,
                   from_last_entry=settings.retention_from_last_entry)

    def params(self, citizen_id: Any, now: datetime, last_entry: datetime | None) -> dict[str, Any]:
        """The parameters of every may_go expression."""
        return {"citizen": citizen_id, "now": now,
                "anchor": last_entry if self.from_last_entry else None,
                **{name: timedelta(days=getattr(self, name)) for name in
                   ("readings", "events", "devices", "alerts", "care", "proxies", "audit")}}


def _alert_may_go(alias: str) -> sql.Composed:
    """When an alert may go: resolved, counted from its resolution; open, from now."""
    return sql.SQL("greatest(CASE WHEN {a}.state = 'resolved' THEN {a}.resolved_at"
                   " ELSE %(now)s END, %(anchor)s) + %(alerts)s").format(a=sql.Identifier(alias))


def _end(column: str) -> sql.Composed:
    """The end of an interval of t, an open (or later) end being now: an erasure ends it now."""
    return sql.SQL("least(coalesce(upper({}), %(now)s), %(now)s)").format(
        sql.Identifier("t", column))


@dataclass(frozen=True)
class Kind:
    """One kind of data in the report: its table (alias t, with a citizen_id column), when a
    row may go, the retention setting that rules it and why it is kept."""

    name: str
    table: str
    may_go: sql.Composable
    setting: str | None  # a Retention field; None: derived data, always erased
    rule: str

    def condition(self, op: str) -> sql.Composed:
        """The citizen's rows whose may_go is `op` now ("<=": those that go)."""
        return sql.SQL("t.citizen_id = %(citizen)s AND ({}) {} %(now)s").format(
            self.may_go, sql.SQL({"<=": "<=", ">": ">"}[op]))


# In the order an erasure deletes them (children before what they refer to).
KINDS: tuple[Kind, ...] = (
    Kind("replay_findings", "replay_findings", sql.SQL("%(now)s"), None, DERIVED_RULE),
    Kind("replay_alerts", "replay_alerts", sql.SQL("%(now)s"), None, DERIVED_RULE),
    Kind("anomaly_baselines", "anomaly_baselines", sql.SQL("%(now)s"), None, DERIVED_RULE),
    Kind("evaluation_failures", "evaluation_failures", sql.SQL("%(now)s"), None, DERIVED_RULE),
    Kind("screen_messages", "screen_messages", sql.SQL(
        "CASE WHEN t.alert_id IS NULL THEN greatest(t.created_at, %(anchor)s) + %(alerts)s"
        " ELSE (SELECT {} FROM alerts a WHERE a.id = t.alert_id) END").format(_alert_may_go("a")),
        "alerts", CARE_RECORD_RULE),
    # with their findings, history and webhook deliveries
    Kind("alerts", "alerts", _alert_may_go("t"), "alerts", CARE_RECORD_RULE),
    # a threshold version holds until the next one; one an alert kept refers to stays with it
    Kind("thresholds", "thresholds", sql.SQL(
        "greatest(greatest(least(coalesce((SELECT min(n.valid_from) FROM thresholds n"
        " WHERE n.citizen_id = t.citizen_id AND n.metric = t.metric AND n.version > t.version),"
        " %(now)s), %(now)s), %(anchor)s) + %(care)s,"
        " (SELECT max({}) FROM alerts a WHERE a.threshold_id = t.id))").format(_alert_may_go("a")),
        "care", CARE_RECORD_RULE),
    # a plan not yet begun holds nothing of the record: it goes with the erasure
    Kind("plans", "citizen_plans", sql.SQL(
        "CASE WHEN lower(t.valid) > %(now)s THEN %(now)s"
        " ELSE greatest({}, %(anchor)s) + %(care)s END").format(_end("valid")),
        "care", CARE_RECORD_RULE),
    Kind("pauses", "alert_pauses", sql.SQL(
        "greatest(least({}, coalesce(t.cancelled_at, %(now)s)), %(anchor)s) + %(care)s").format(
        _end("during")), "care", CARE_RECORD_RULE),
    # a pairing says whose the device's data is: it stays while data measured within it stays
    Kind("devices", "device_pairings", sql.SQL(
        "greatest(greatest({}, %(anchor)s) + %(devices)s,"
        " (SELECT max(greatest(r.received_at, %(anchor)s) + %(readings)s) FROM readings r"
        "   WHERE r.citizen_id = t.citizen_id AND r.device_id = t.device_id"
        "     AND t.valid @> r.measured_at),"
        " (SELECT max(greatest(e.received_at, %(anchor)s) + %(events)s) FROM device_events e"
        "   WHERE e.citizen_id = t.citizen_id AND e.device_id = t.device_id"
        "     AND t.valid @> e.measured_at))").format(_end("valid")), "devices", CARE_RECORD_RULE),
    # entered into the record when received
    Kind("readings", "readings", sql.SQL("greatest(t.received_at, %(anchor)s) + %(readings)s"),
         "readings", CARE_RECORD_RULE),
    Kind("device_events", "device_events",
         sql.SQL("greatest(t.received_at, %(anchor)s) + %(events)s"), "events", CARE_RECORD_RULE),
    Kind("proxies", "proxies", sql.SQL(
        "least(coalesce(t.revoked_at, %(now)s), {}) + %(proxies)s").format(_end("valid")),
        "proxies", PROXY_RULE),
    Kind("audit_log", "audit_log", sql.SQL("t.at + %(audit)s"), "audit", AUDIT_RULE),
)
# Kept data that keeps the citizen's name: everything but the log (which names the citizen by
# id only) and derived data.
IDENTIFYING = frozenset(k.name for k in KINDS if k.setting not in (None, "audit"))
ERASED_NAME = "(erased)"

_CITIZEN = "SELECT discharged_at FROM citizens WHERE id = %s"
_LAST_ENTRY = """
SELECT greatest((SELECT max(received_at) FROM readings WHERE citizen_id = %(c)s),
                (SELECT max(received_at) FROM device_events WHERE citizen_id = %(c)s),
                (SELECT max(updated_at) FROM alerts WHERE citizen_id = %(c)s),
                (SELECT max(set_at) FROM citizen_plans WHERE citizen_id = %(c)s),
                (SELECT max(set_at) FROM thresholds WHERE citizen_id = %(c)s),
                (SELECT max(created_at) FROM alert_pauses WHERE citizen_id = %(c)s))"""
_COUNT = """
SELECT count(*) FILTER (WHERE may_go <= %(now)s), count(*) FILTER (WHERE may_go > %(now)s),
       min(may_go) FILTER (WHERE may_go > %(now)s), max(may_go) FILTER (WHERE may_go > %(now)s)
  FROM (SELECT {may_go} AS may_go FROM {table} t WHERE t.citizen_id = %(citizen)s) x"""
_HELD = """
SELECT device_id FROM device_pairings
 WHERE citizen_id = %(citizen)s AND upper_inf(valid) ORDER BY 1"""
_PLANS_IN_FORCE = """
SELECT count(*) FROM citizen_plans
 WHERE citizen_id = %(citizen)s AND valid @> %(now)s::timestamptz"""
_PROXIES_OPEN = """
SELECT count(*) FROM proxies
 WHERE citizen_id = %(citizen)s AND revoked_at IS NULL
   AND (upper_inf(valid) OR upper(valid) > %(now)s)"""
_USER = "SELECT username, disabled_at IS NULL FROM users WHERE citizen_id = %(citizen)s"
_ENROLMENTS_OPEN = """
SELECT count(*) FROM pilot_enrolments
 WHERE citizen_id = %(citizen)s AND (upper_inf(valid) OR upper(valid) > %(now)s)"""


def last_entry(conn: Conn, citizen_id: Any) -> datetime | None:
    """The time of the newest entry in the citizen's care record (None: nothing recorded)."""
    value: datetime | None = _one(conn, _LAST_ENTRY, {"c": citizen_id})[0]
    return value


def plan(conn: Conn, citizen_id: Any, retention: Retention, now: datetime, *,
         dry_run: bool = True, anchor: datetime | None = None) -> ErasureReport:
    """What an erasure of the citizen at `now` deletes and keeps (and why, and until when), and
    what it stops; CitizenNotFound. Changes nothing. `anchor`: the last entry as found before
    an erasure began (default: as it is now)."""
    _exists(conn, citizen_id)
    entry = last_entry(conn, citizen_id) if anchor is None else anchor
    params = retention.params(citizen_id, now, entry)
    kinds: dict[str, ErasureKind] = {}
    for kind in KINDS:
        query = sql.SQL(_COUNT).format(may_go=kind.may_go, table=sql.Identifier(kind.table))
        delete, keep, first, last = _one(conn, query, params)
        days = getattr(retention, kind.setting) if kind.setting else None
        kinds[kind.name] = ErasureKind(
            delete=delete, keep=keep, retention_days=days,
            counted_from=_counted_from(kind, retention), rule=kind.rule,
            reason=_reason(kind, days, keep), next_may_go=first, all_may_go=last)
    held = [device for (device,) in _rows(conn, _HELD, params)]
    user = _one_or_none(conn, _USER, params)
    processing = ErasureProcessing(
        devices_taken_back=held, plans_ended=_one(conn, _PLANS_IN_FORCE, params)[0],
        proxies_revoked=_one(conn, _PROXIES_OPEN, params)[0],
        pilot_enrolments_ended=_one(conn, _ENROLMENTS_OPEN, params)[0],
        user_disabled=user[0] if user is not None and user[1] else None)
    kept = sorted(name for name in IDENTIFYING if kinds[name].keep)
    return ErasureReport(
        citizen_id=citizen_id, at=now, dry_run=dry_run, last_entry=entry, kinds=kinds,
        processing=processing, identity_kept=bool(kept),
        identity=("the name and conditions stay while data is kept: " + ", ".join(kept)) if kept
        else f"the name and conditions are replaced by {ERASED_NAME!r}: no data that needs them "
             "is kept (the audit log names the citizen by id only)")


def _exists(conn: Conn, citizen_id: Any) -> None:
    if _one_or_none(conn, _CITIZEN, (citizen_id,)) is None:
        raise CitizenNotFound(f"no citizen {citizen_id}")


def _counted_from(kind: Kind, retention: Retention) -> str:
    if kind.setting is None:
        return "always erased"
    if kind.rule == CARE_RECORD_RULE and retention.from_last_entry:
        return "the last entry in the citizen's care record (or the row's own time, if later)"
    return "the row's own time (its end; an open one: now)"


def _reason(kind: Kind, days: int | None, keep: int) -> str:
    if days is None or not keep:
        return "nothing of this kind is within its retention"
    return f"within its retention of {days} days: {kind.rule}"


def _one(conn: Conn, query: sql.Composed | str, params: Any) -> tuple[Any, ...]:
    row = _one_or_none(conn, query, params)
    assert row is not None  # aggregate queries always answer a row
    return row


def _one_or_none(conn: Conn, query: sql.Composed | str, params: Any) -> tuple[Any, ...] | None:
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchone()


def _rows(conn: Conn, query: str, params: Any) -> list[tuple[Any, ...]]:
    with conn.cursor(row_factory=tuple_row) as cur:
        return cur.execute(query, params).fetchall()
