"""Everything held about a citizen as one zip archive (docs/access.md, "Citizen rights"): the
record, readings, device events, devices and pairings, alerts with their history and findings,
screen messages, plans, thresholds and pauses, proxies, and the look-ups in their data. The
route (api/routes/citizen_rights.py) checks the caller (access.archive) and records the export.

Rows are written as they are read: readings and events through a server-side cursor into the
zip's entry, and the zip into a spooled temporary file, so a citizen's tens of thousands of
readings cost a few megabytes of disk, not of memory."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import IO, Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from alerts import baseline_repository
from devices.catalogue import METRICS

Conn = psycopg.Connection[Any]

_CITIZEN = """
SELECT c.id, c.display_name, c.conditions, c.care_team_id, t.name AS care_team, c.created_at,
       c.discharged_at, u.username
  FROM citizens c
  LEFT JOIN care_teams t ON t.id = c.care_team_id
  LEFT JOIN users u ON u.citizen_id = c.id
 WHERE c.id = %(citizen)s"""
_READINGS = """
SELECT measured_at, metric, value, device_id, seq, quality, late, delay_cause, received_at,
       sent_at, clock_suspect
  FROM readings WHERE citizen_id = %(citizen)s
 ORDER BY measured_at, metric, device_id, seq"""
_EVENTS = """
SELECT measured_at, kind, device_id, seq, data, late, delay_cause, received_at, sent_at,
       clock_suspect
  FROM device_events WHERE citizen_id = %(citizen)s
 ORDER BY measured_at, device_id, seq"""
_DEVICES = """
SELECT p.device_id, d.kind, d.model, d.serial, lower(p.valid) AS valid_from,
       upper(p.valid) AS valid_until
  FROM device_pairings p JOIN devices d ON d.id = p.device_id
 WHERE p.citizen_id = %(citizen)s
 ORDER BY lower(p.valid), p.device_id"""
_ALERTS = """
SELECT id, rule, severity, state, count, first_measured_at, last_measured_at, opened_at,
       updated_at, is_current, data_age_s, delay_cause, held, summary, explanation,
       threshold_id, threshold_version, escalation_step, acknowledged_at, acknowledged_by,
       resolved_at, resolved_by, outcome, note
  FROM alerts WHERE citizen_id = %(citizen)s ORDER BY id"""
_HISTORY = """
SELECT h.alert_id, h.id, h.at, h.action, h.actor, h.severity, h.state, h.detail
  FROM alert_history h JOIN alerts a ON a.id = h.alert_id
 WHERE a.citizen_id = %(citizen)s ORDER BY h.id"""
_FINDINGS = """
SELECT alert_id, rule, occurrence, severity, measured_at, evaluated_at, is_current, data_age_s,
       delay_cause, detail
  FROM alert_findings WHERE citizen_id = %(citizen)s ORDER BY alert_id, measured_at"""
_MESSAGES = """
SELECT id, kind, alert_id, body, created_at, sent_at, undeliverable
  FROM screen_messages WHERE citizen_id = %(citizen)s ORDER BY id"""
_PLANS = """
SELECT plan, lower(valid) AS valid_from, upper(valid) AS valid_until, settings, set_by, set_at
  FROM citizen_plans WHERE citizen_id = %(citizen)s ORDER BY lower(valid), plan"""
_THRESHOLDS = """
SELECT id, metric, version, alert_low, warning_low, warning_high, alert_high, valid_from,
       set_by, set_at, reason
  FROM thresholds WHERE citizen_id = %(citizen)s ORDER BY metric, version"""
_PAUSES = """
SELECT id, lower(during) AS start, upper(during) AS "end", reason, note, created_by,
       created_at, cancelled_at
  FROM alert_pauses WHERE citizen_id = %(citizen)s ORDER BY lower(during)"""
_PROXIES = """
SELECT p.id, u.username AS relative, u.display_name AS relative_name, p.kinds,
       lower(p.valid) AS valid_from, upper(p.valid) AS valid_until, p.granted_by, p.granted_at,
       p.revoked_at
  FROM proxies p JOIN users u ON u.id = p.relative_id
 WHERE p.citizen_id = %(citizen)s ORDER BY p.id"""
_LOOKUPS = """
SELECT at, role, action, what, purpose, user_id, username, route
  FROM audit_log WHERE citizen_id = %(citizen)s ORDER BY id"""

READING_COLUMNS = ("measured_at", "metric", "value", "unit", "device_id", "seq", "quality",
                   "late", "delay_cause", "received_at", "sent_at", "clock_suspect")
EVENT_COLUMNS = ("measured_at", "kind", "device_id", "seq", "data", "late", "delay_cause",
                 "received_at", "sent_at", "clock_suspect")
DEVICE_COLUMNS = ("device_id", "kind", "model", "serial", "valid_from", "valid_until")
MESSAGE_COLUMNS = ("id", "kind", "alert_id", "body", "created_at", "sent_at", "undeliverable")
# The citizen sees when, in which role, what and why; not who (as GET /citizens/{id}/audit).
LOOKUP_COLUMNS = ("at", "role", "action", "what", "purpose")
LOOKUP_COLUMNS_FULL = (*LOOKUP_COLUMNS, "user_id", "username", "route")

FILES: dict[str, str] = {
    "citizen.json": "the citizen's record: name, conditions, care team, enrolled, discharged, "
                    "own user",
    "readings.csv": "every measurement: measured time (the device's clock), metric, value, UCUM "
                    "unit, device, sequence number, quality (valid or implausible), whether it "
                    "arrived late and why (device: held offline; transit: on the way), when "
                    "Telecare received it, when the device sent it, whether the device clock "
                    "was suspect",
    "device_events.csv": "button presses, sensor events and answers on the home screen",
    "devices.csv": "the devices the citizen had and when (pairing validity: from, until; an "
                   "empty until: still held)",
    "alerts.json": "alerts raised on the citizen's data, each with its history (who did what "
                   "when) and the findings that raised it",
    "screen_messages.csv": "messages sent to the citizen's home screen",
    "care.json": "monitoring plans, thresholds (every version), alert pauses, and the personal "
                 "baselines learnt from the citizen's readings (her usual value and spread per "
                 "series, from how many readings, when)",
    "proxies.json": "the relatives given proxy rights (fuldmagt): what, from when until when, "
                    "revoked",
    "lookups.csv": "every look at and change of the citizen's data: when, in which role, what "
                   "and why",
}


def write_archive(conn: Conn, citizen_id: UUID, out: IO[bytes], now: datetime, *,
                  who_looked: bool) -> dict[str, int]:
    """The archive into `out`; returns the rows per file. `who_looked`: the look-ups name the
    user and route (administrators), else only when, role, what and why (the citizen)."""
    params = {"citizen": citizen_id}
    counts: dict[str, int] = {}
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        citizen = _all(conn, _CITIZEN, params)
        counts["citizen.json"] = len(citizen)
        _json(archive, "citizen.json", citizen[0] if citizen else {})
        counts["readings.csv"] = _csv(archive, "readings.csv", READING_COLUMNS, (
            {**row, "unit": METRICS[row["metric"]].ucum if row["metric"] in METRICS else ""}
            for row in _stream(conn, _READINGS, params)))
        counts["device_events.csv"] = _csv(archive, "device_events.csv", EVENT_COLUMNS,
                                           _stream(conn, _EVENTS, params))
        counts["devices.csv"] = _csv(archive, "devices.csv", DEVICE_COLUMNS,
                                     _all(conn, _DEVICES, params))
        alerts = _all(conn, _ALERTS, params)
        by_id = {alert["id"]: {**alert, "history": [], "findings": []} for alert in alerts}
        for row in _all(conn, _HISTORY, params):
            by_id[row.pop("alert_id")]["history"].append(row)
        for row in _all(conn, _FINDINGS, params):
            if row["alert_id"] in by_id:
                by_id[row.pop("alert_id")]["findings"].append(row)
        counts["alerts.json"] = len(alerts)
        _json(archive, "alerts.json", list(by_id.values()))
        counts["screen_messages.csv"] = _csv(archive, "screen_messages.csv", MESSAGE_COLUMNS,
                                             _all(conn, _MESSAGES, params))
        care = {"plans": _all(conn, _PLANS, params), "thresholds": _all(conn, _THRESHOLDS, params),
                "pauses": _all(conn, _PAUSES, params), "baselines": _baselines(conn, citizen_id)}
        counts["care.json"] = sum(len(rows) for rows in care.values())
        _json(archive, "care.json", care)
        proxies = _all(conn, _PROXIES, params)
        counts["proxies.json"] = len(proxies)
        _json(archive, "proxies.json", proxies)
        counts["lookups.csv"] = _csv(archive, "lookups.csv",
                                     LOOKUP_COLUMNS_FULL if who_looked else LOOKUP_COLUMNS,
                                     _stream(conn, _LOOKUPS, params))
        manifest = {"citizen_id": citizen_id, "made_at": now,
                    "files": {name: {"description": text, "rows": counts[name]}
                              for name, text in FILES.items()}}
        _json(archive, "manifest.json", manifest)
        archive.writestr("README.txt", _readme(citizen_id, now, counts))
    return counts


def _baselines(conn: Conn, citizen_id: UUID) -> list[dict[str, Any]]:
    """What each personal baseline learnt about her, in words a person reads (not its state)."""
    found = []
    for series, baseline in sorted(baseline_repository.load(conn, [citizen_id])
                                   .get(citizen_id, {}).items()):
        usual = baseline.value_feature()
        found.append({"series": series, "status": baseline.status,
                      "trained_at": baseline.trained_at, "readings": baseline.rows,
                      "left_out": baseline.excluded, "first_at": baseline.first_at,
                      "trained_through": baseline.trained_through,
                      "usual": usual[0] if usual else None,
                      "usual_spread": usual[1] if usual else None})
    return found


def _readme(citizen_id: UUID, now: datetime, counts: dict[str, int]) -> str:
    lines = [f"Everything Telecare holds about citizen {citizen_id}, made {now.isoformat()}.",
             "Times are RFC 3339 with their UTC offset. manifest.json says the same as JSON.", ""]
    lines += [f"{name} ({counts[name]} rows): {text}" for name, text in FILES.items()]
    return "\n".join(lines) + "\n"


def _stream(conn: Conn, query: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Rows through a server-side cursor, a thousand at a time."""
    with conn.cursor(name="citizen_export", row_factory=dict_row) as cur:
        cur.itersize = 1000
        cur.execute(query, params)
        yield from cur


def _all(conn: Conn, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def _csv(archive: zipfile.ZipFile, name: str, columns: Sequence[str],
         rows: Iterable[dict[str, Any]]) -> int:
    written = 0
    with archive.open(name, "w") as raw, io.TextIOWrapper(raw, encoding="utf-8",
                                                          newline="") as text:
        writer = csv.writer(text)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(column)) for column in columns])
            written += 1
    return written


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=_plain)
    return str(value)


def _json(archive: zipfile.ZipFile, name: str, value: Any) -> None:
    archive.writestr(name, json.dumps(value, ensure_ascii=False, indent=1, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # UUID, Decimal
