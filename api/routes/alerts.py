"""Triage: a care team's queue, one alert with what explains it, its history, and what a nurse
does with it (acknowledge, resolve). The actor recorded is the caller."""

from __future__ import annotations

import re
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query
from pydantic import PlainValidator, WithJsonSchema

from alerts import service, triage
from alerts.errors import AlertNotFound
from api import access, audit
from api.deps import CallerDep, DbDep, NowDep
from api.problems import responses
from api.schemas import (
    AcknowledgeRequest,
    AlertExplained,
    AlertHistoryEntry,
    AlertPage,
    AlertPublic,
    AlertState,
    FindingPublic,
    ReadingPublic,
    ReadingSeriesPublic,
    ResolveRequest,
    SeverityName,
    ThresholdVersionPublic,
)
from devices.catalogue import METRICS
from devices.errors import CitizenNotFound

router = APIRouter(tags=["alerts"])

# A rule name as the rules write it: "news2", "threshold:spo2", "trend:weight_gain".
RULE_PATTERN = "^[a-z0-9_]{1,40}(:[a-z0-9_]{1,40})?$"
_RULE = re.compile(RULE_PATTERN[1:-1])
MAX_ID = 2**63 - 1  # alert ids are bigint: a larger number cannot name one


def _parse_rule(value: object) -> str:
    if not isinstance(value, str) or _RULE.fullmatch(value) is None:
        raise ValueError("a rule name is lower-case letters, digits and _, optionally "
                         "kind:name, e.g. threshold:spo2")
    return value


RuleName = Annotated[str, PlainValidator(_parse_rule), WithJsonSchema(
    {"type": "string", "pattern": RULE_PATTERN})]
AlertId = Annotated[int, Path(ge=1, le=MAX_ID)]


@router.get("/teams/{team_id}/alerts", response_model=AlertPage, responses=responses(404, 422))
def team_queue(
    team_id: UUID,
    conn: DbDep,
    caller: CallerDep,
    now: NowDep,
    state: Annotated[list[AlertState], Query(
        description="any of these states; default: open and acknowledged")] = [  # noqa: B006
        "open", "acknowledged"],
    severity: Annotated[list[SeverityName] | None, Query(
        description="any of these severities; default: both")] = None,
    rule: Annotated[RuleName | None, Query(description="one rule, e.g. threshold:spo2")] = None,
    citizen_id: Annotated[UUID | None, Query(description="one citizen's alerts")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> AlertPage:
    """A care team's alerts, red before yellow, then the oldest first; for those who work in
    the team (administrators: every team)."""
    access.team(conn, caller, team_id)
    where = triage.QueueFilter(states=tuple(dict.fromkeys(state)),
                               severities=None if not severity else tuple(severity),
                               rule=rule, citizen_id=citizen_id)
    within = None if access.administers(caller) else access.visible(caller, "alerts", now)
    rows, total = triage.team_queue(conn, team_id, where, limit, offset, within)
    audit.searched(conn, caller, "alerts", (row["citizen_id"] for row in rows), now)
    return AlertPage(care_team_id=team_id, total=total, limit=limit, offset=offset,
                     alerts=[AlertPublic(**row) for row in rows])


@router.get("/alerts/{alert_id}", response_model=AlertExplained, responses=responses(404, 422))
def get_alert(alert_id: AlertId, conn: DbDep, caller: CallerDep, now: NowDep) -> AlertExplained:
    """One alert with its explanation, the threshold version that raised it, its findings and
    the readings of its metrics a day either side of them (readings only for those who may see
    the citizen's readings; a relative: those measured while the proxy is in force)."""
    access.alert(conn, caller, alert_id, now)
    row = _alert_row(conn, alert_id)
    explanation: dict[str, Any] = row["explanation"] or {}
    version = None if row["threshold_id"] is None else triage.threshold(conn, row["threshold_id"])
    metrics = [m for m in triage.metrics_of(row["rule"], explanation) if m in METRICS]
    readings = _readings_around(conn, caller, row, metrics, now)
    series = [ReadingSeriesPublic(metric=metric, unit=METRICS[metric].ucum, readings=[
        ReadingPublic(**r) for r in readings if r["metric"] == metric]) for metric in metrics]
    return AlertExplained(
        alert=AlertPublic(**row), explanation=explanation,
        threshold=None if version is None else ThresholdVersionPublic(**version),
        findings=[FindingPublic(**f) for f in triage.findings(conn, alert_id)],
        readings_start=row["first_measured_at"] - triage.READINGS_AROUND,
        readings_end=row["last_measured_at"] + triage.READINGS_AROUND,
        readings=series)


@router.get("/alerts/{alert_id}/history", response_model=list[AlertHistoryEntry],
            responses=responses(404, 422))
def alert_history(alert_id: AlertId, conn: DbDep, caller: CallerDep,
                  now: NowDep) -> list[AlertHistoryEntry]:
    """Everything that happened to the alert, oldest first."""
    access.alert(conn, caller, alert_id, now)
    return [AlertHistoryEntry.model_validate(row) for row in service.history(conn, alert_id)]


@router.post("/alerts/{alert_id}/acknowledge", response_model=AlertPublic,
             responses=responses(400, 403, 404, 409, 422))
def acknowledge(alert_id: AlertId, body: AcknowledgeRequest, conn: DbDep, caller: CallerDep,
                now: NowDep) -> AlertPublic:
    """The caller has seen the alert: it stops escalating. 409 unless it is open."""
    access.alert(conn, caller, alert_id, now, change=True)
    service.acknowledge(conn, alert_id, caller.subject, now, body.note)
    return AlertPublic(**_alert_row(conn, alert_id))


@router.post("/alerts/{alert_id}/resolve", response_model=AlertPublic,
             responses=responses(400, 403, 404, 409, 422))
def resolve(alert_id: AlertId, body: ResolveRequest, conn: DbDep, caller: CallerDep,
            now: NowDep) -> AlertPublic:
    """Close the alert with an outcome and a note. 409 when it is already resolved."""
    access.alert(conn, caller, alert_id, now, change=True)
    service.resolve(conn, alert_id, caller.subject, body.outcome, body.note, now)
    return AlertPublic(**_alert_row(conn, alert_id))


def _readings_around(conn: DbDep, caller: CallerDep, row: dict[str, Any], metrics: list[str],
                     now: NowDep) -> list[dict[str, Any]]:
    """The readings an alert's page shows, as far as the caller may see readings."""
    try:
        window = access.citizen(conn, caller, row["citizen_id"], "readings", now)
    except CitizenNotFound:
        return []
    return triage.readings_around(conn, row["citizen_id"], metrics, row["first_measured_at"],
                                  row["last_measured_at"], within=(window.since, window.until))


def _alert_row(conn: DbDep, alert_id: int) -> dict[str, Any]:
    row = triage.alert(conn, alert_id)
    if row is None:
        raise AlertNotFound(f"no alert {alert_id}")
    return row
