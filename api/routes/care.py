"""What a nurse sets up around a citizen: the care team, monitoring plans, thresholds (each
change a new version), pauses; and a team's escalation policy. The actor recorded is the caller."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query

from alerts import repository, service, triage
from alerts.errors import InvalidWebhook, PauseNotFound
from alerts.escalation import EscalationPolicy
from alerts.models import Threshold
from alerts.plans import default_thresholds, validate_settings
from alerts.replay import ReplayRequest, run_replay
from alerts.repository import CareTeam, Pause, PlanAssignment, ThresholdVersion
from alerts.service import points_inside
from api import access, audit
from api.access import ChangesCare, SeesCare
from api.deps import CallerDep, DbDep, NowDep, require_role
from api.errors import EmptyRange, PeriodTooLong
from api.params import MetricCode
from api.problems import responses
from api.schemas import (
    CitizenTeamAssign,
    CitizenTeamPublic,
    EscalationPolicyBody,
    EscalationPolicyPublic,
    MetricThresholds,
    PauseCreate,
    PausePublic,
    PlanName,
    PlanPublic,
    PlanStart,
    TeamCreate,
    TeamPublic,
    ThresholdInForce,
    ThresholdSet,
    ThresholdVersionPublic,
    ThresholdWhatIf,
    WebhookCreate,
    WebhookCreated,
    WebhookPublic,
    WebhookSwitch,
    WhatIfAlert,
    WhatIfResult,
)

router = APIRouter(tags=["care"])

PauseId = Annotated[int, Path(ge=1, le=2**63 - 1)]
WebhookId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def _team(team: CareTeam, citizens: int) -> TeamPublic:
    return TeamPublic(id=team.id, name=team.name, created_at=team.created_at, citizens=citizens)


# --- care teams ---------------------------------------------------------------------------

@router.get("/teams", response_model=list[TeamPublic], responses=responses())
def list_teams(conn: DbDep, caller: CallerDep) -> list[TeamPublic]:
    """The care teams the caller works in (administrators: every team), by name, with how
    many citizens each has."""
    sizes = triage.team_sizes(conn)
    return [_team(team, sizes.get(team.id, 0))
            for team in service.teams(conn, access.visible_teams(caller))]


@router.post("/teams", response_model=TeamPublic, status_code=201,
             responses=responses(400, 403, 409, 422))
def create_team(body: TeamCreate, conn: DbDep, caller: CallerDep, now: NowDep) -> TeamPublic:
    """A new care team; 409 when the name is taken (or blank). Administrators only."""
    require_role(caller, "administrator")
    return _team(service.create_team(conn, body.name, now), 0)


@router.get("/teams/{team_id}", response_model=TeamPublic, responses=responses(404, 422))
def get_team(team_id: UUID, conn: DbDep, caller: CallerDep) -> TeamPublic:
    """One care team the caller works in."""
    access.team(conn, caller, team_id)
    return _team(service.team(conn, team_id), triage.team_sizes(conn).get(team_id, 0))


@router.get("/citizens/{citizen_id}/team", response_model=CitizenTeamPublic,
            responses=responses(404, 422))
def citizen_team(citizen_id: UUID, _access: SeesCare, conn: DbDep, _caller: CallerDep) -> CitizenTeamPublic:
    """The care team a citizen belongs to."""
    return CitizenTeamPublic(citizen_id=citizen_id,
                             care_team_id=service.team_of(conn, citizen_id))


@router.put("/citizens/{citizen_id}/team", response_model=CitizenTeamPublic,
            responses=responses(400, 403, 404, 422))
def assign_team(citizen_id: UUID, body: CitizenTeamAssign, conn: DbDep,
                caller: CallerDep, now: NowDep) -> CitizenTeamPublic:
    """Put a citizen in a care team; the team takes over the alerts still in hand. 404 for an
    unknown citizen or team. Administrators only."""
    require_role(caller, "administrator")
    service.assign_citizen(conn, citizen_id, body.care_team_id)
    audit.record(conn, caller, "change", "registry", [citizen_id], now)
    return CitizenTeamPublic(citizen_id=citizen_id, care_team_id=body.care_team_id)


@router.get("/teams/{team_id}/escalation-policy", response_model=EscalationPolicyPublic,
            responses=responses(404, 422))
def get_policy(team_id: UUID, conn: DbDep, caller: CallerDep) -> EscalationPolicyPublic:
    """Who a red alert goes to when nobody acknowledges it, and after how long: the team's own
    chain, or the default one."""
    access.team(conn, caller, team_id)
    return _policy(conn, team_id, service.get_policy(conn, team_id))


@router.put("/teams/{team_id}/escalation-policy", response_model=EscalationPolicyPublic,
            responses=responses(400, 403, 404, 422))
def set_policy(team_id: UUID, body: EscalationPolicyBody, conn: DbDep, caller: CallerDep,
               now: NowDep) -> EscalationPolicyPublic:
    """Replace the team's chain: after_s strictly increasing, a webhook step names one of the
    team's webhooks (else 422)."""
    access.team(conn, caller, team_id, change=True)
    chain = service.set_policy(conn, team_id, body.model_dump()["steps"], now)
    return _policy(conn, team_id, chain)


def _policy(conn: DbDep, team_id: UUID, policy: EscalationPolicy) -> EscalationPolicyPublic:
    updated_at = triage.policy_updated_at(conn, team_id)
    return EscalationPolicyPublic.model_validate({
        "care_team_id": team_id, "is_default": updated_at is None, "steps": policy.as_json(),
        "updated_at": updated_at})


# --- webhooks -----------------------------------------------------------------------------

@router.get("/teams/{team_id}/webhooks", response_model=list[WebhookPublic],
            responses=responses(403, 404, 422))
def list_webhooks(team_id: UUID, conn: DbDep, caller: CallerDep) -> list[WebhookPublic]:
    """The team's webhooks, oldest first (their secrets are never shown again);
    administrators only."""
    require_role(caller, "administrator")
    service.team(conn, team_id)
    return [WebhookPublic.model_validate(hook) for hook in service.webhooks_of_team(conn, team_id)]


@router.post("/teams/{team_id}/webhooks", response_model=WebhookCreated, status_code=201,
             responses=responses(400, 403, 404, 422))
def add_webhook(team_id: UUID, body: WebhookCreate, conn: DbDep, caller: CallerDep,
                now: NowDep) -> WebhookCreated:
    """A webhook that receives every pushed change of the team, signed with a new secret,
    which this answer shows once; administrators only. 422 `invalid_webhook` for a URL that
    names this machine or a link-local address."""
    require_role(caller, "administrator")
    if points_inside(body.url):
        raise InvalidWebhook("a webhook may not point at this machine or a link-local address")
    return WebhookCreated.model_validate(service.add_webhook(conn, team_id, body.url, None, now))


@router.patch("/teams/{team_id}/webhooks/{webhook_id}", response_model=WebhookPublic,
              responses=responses(400, 403, 404, 422))
def switch_webhook(team_id: UUID, webhook_id: WebhookId, body: WebhookSwitch, conn: DbDep,
                   caller: CallerDep) -> WebhookPublic:
    """Switch one of the team's webhooks on or off; 404 `webhook_not_found` for a webhook of
    another team, as for one that does not exist. Administrators only."""
    require_role(caller, "administrator")
    service.team(conn, team_id)
    return WebhookPublic.model_validate(
        service.set_webhook_active(conn, webhook_id, body.active, team_id))


# --- plans --------------------------------------------------------------------------------

def _plan(row: PlanAssignment) -> PlanPublic:
    return PlanPublic(**asdict(row))


@router.get("/citizens/{citizen_id}/plans", response_model=list[PlanPublic],
            responses=responses(404, 422))
def list_plans(
    citizen_id: UUID, _access: SeesCare, conn: DbDep, _caller: CallerDep, now: NowDep,
    include_ended: Annotated[bool, Query(description="also the periods that have ended")] = False,
) -> list[PlanPublic]:
    """The plans a citizen follows now or later (with include_ended, every period), oldest first."""
    return [_plan(row) for row in service.plans_of(conn, citizen_id)
            if include_ended or row.valid_to is None or row.valid_to > now]


@router.get("/citizens/{citizen_id}/plans/{plan}", response_model=list[PlanPublic],
            responses=responses(404, 422))
def plan_periods(citizen_id: UUID, _access: SeesCare, plan: PlanName, conn: DbDep,
                 _caller: CallerDep) -> list[PlanPublic]:
    """Every period during which the citizen followed `plan`, oldest first."""
    return [_plan(row) for row in service.plans_of(conn, citizen_id) if row.plan == plan]


@router.put("/citizens/{citizen_id}/plans/{plan}", response_model=PlanPublic,
            responses=responses(400, 403, 404, 409, 422))
def start_plan(citizen_id: UUID, _access: ChangesCare, plan: PlanName, body: PlanStart, conn: DbDep,
               caller: CallerDep, now: NowDep) -> PlanPublic:
    """The citizen follows `plan` from valid_from (default now) until ended; `settings` override
    the template's schedule (422 when the plan cannot take them). 409 when they already follow
    it during that time."""
    validate_settings(plan, body.settings)
    return _plan(service.set_plan(conn, citizen_id, plan, body.valid_from or now, caller.subject,
                                  now, settings=body.settings))


@router.delete("/citizens/{citizen_id}/plans/{plan}", response_model=PlanPublic,
               responses=responses(403, 404, 422))
def end_plan(citizen_id: UUID, _access: ChangesCare, plan: PlanName, conn: DbDep, _caller: CallerDep,
             now: NowDep) -> PlanPublic:
    """The citizen stops following `plan` now; 404 when it is not in force."""
    return _plan(service.end_plan(conn, citizen_id, plan, now))


# --- thresholds ---------------------------------------------------------------------------

def _in_force(threshold: Threshold, source: str) -> ThresholdInForce:
    return ThresholdInForce.model_validate({
        "metric": threshold.metric, "version": threshold.version, "id": threshold.id,
        "source": source, "valid_from": threshold.valid_from, **threshold.bands.model_dump()})


def _version(row: ThresholdVersion) -> ThresholdVersionPublic:
    return ThresholdVersionPublic(id=row.id, metric=row.metric, version=row.version,
                                  valid_from=row.valid_from, set_by=row.set_by, set_at=row.set_at,
                                  reason=row.reason, **row.bands.model_dump())


def _thresholds_now(conn: DbDep, citizen_id: UUID, now: datetime) -> dict[str, ThresholdInForce]:
    plans = [row.plan for row in service.plans_in_force(conn, [citizen_id], now).get(citizen_id, [])]
    found = {metric: _in_force(t, "plan_default") for metric, t in default_thresholds(plans).items()}
    own = service.thresholds_in_force(conn, [citizen_id], now).get(citizen_id, {})
    found.update({metric: _in_force(t, "citizen") for metric, t in own.items()})
    return found


@router.get("/citizens/{citizen_id}/thresholds", response_model=list[ThresholdInForce],
            responses=responses(404, 422))
def thresholds(citizen_id: UUID, _access: SeesCare, conn: DbDep, _caller: CallerDep,
               now: NowDep) -> list[ThresholdInForce]:
    """The bands in force now per metric: the citizen's latest version, else their plans'
    defaults (version 0)."""
    return sorted(_thresholds_now(conn, citizen_id, now).values(), key=lambda t: t.metric)


@router.get("/citizens/{citizen_id}/thresholds/{metric}", response_model=MetricThresholds,
            responses=responses(404, 422))
def metric_thresholds(citizen_id: UUID, _access: SeesCare, metric: MetricCode, conn: DbDep,
                      _caller: CallerDep, now: NowDep) -> MetricThresholds:
    """One metric's bands in force now and every version the citizen has had."""
    return MetricThresholds(
        metric=metric, in_force=_thresholds_now(conn, citizen_id, now).get(metric),
        versions=[_version(row) for row in service.threshold_history(conn, citizen_id, metric)])


@router.get("/citizens/{citizen_id}/thresholds/{metric}/versions",
            response_model=list[ThresholdVersionPublic], responses=responses(404, 422))
def threshold_versions(citizen_id: UUID, _access: SeesCare, metric: MetricCode, conn: DbDep,
                       _caller: CallerDep) -> list[ThresholdVersionPublic]:
    """Every version the citizen's bands for `metric` have had, oldest first (the plans'
    defaults, version 0, are not stored and not listed)."""
    return [_version(row) for row in service.threshold_history(conn, citizen_id, metric)]


@router.put("/citizens/{citizen_id}/thresholds/{metric}", response_model=ThresholdVersionPublic,
            responses=responses(400, 403, 404, 422))
def set_threshold(citizen_id: UUID, _access: ChangesCare, metric: MetricCode, body: ThresholdSet, conn: DbDep,
                  caller: CallerDep, now: NowDep) -> ThresholdVersionPublic:
    """The next version of one metric's bands (blood pressure per component: systolic_bp,
    diastolic_bp), in force from valid_from (default now). 422 unless at least one band is
    given and alert_low < warning_low < warning_high < alert_high for those given."""
    bands = service.parse_bands(body.model_dump(include={
        "alert_low", "warning_low", "warning_high", "alert_high"}))
    stored = service.set_thresholds(conn, citizen_id, metric, bands, body.valid_from or now,
                                    caller.subject, now, reason=body.reason)
    assert stored.id is not None  # a stored version always has its row
    row = triage.threshold(conn, stored.id)
    assert row is not None
    return ThresholdVersionPublic(**row)


# A nurse's question is about the recent past; longer periods are for `telecare alerts replay`.
WHAT_IF_DEFAULT = timedelta(days=30)
WHAT_IF_LONGEST = timedelta(days=92)


@router.post("/citizens/{citizen_id}/thresholds/{metric}/what-if", response_model=WhatIfResult,
             responses=responses(400, 403, 404, 422))
def what_if_thresholds(citizen_id: UUID, _access: ChangesCare, metric: MetricCode, body: ThresholdWhatIf,
                       conn: DbDep, caller: CallerDep, now: NowDep) -> WhatIfResult:
    """What these bands would have raised for the citizen over a stored period (default the
    last 30 days, at most 92), by replaying the production rules with the bands in place of
    those in force. Nothing is saved as a threshold and nobody is notified."""
    bands = service.parse_bands(body.model_dump(include={
        "alert_low", "warning_low", "warning_high", "alert_high"}))
    end = body.end or now
    start = body.start or end - WHAT_IF_DEFAULT
    if not start < end:
        raise EmptyRange("start must be before end")
    if end - start > WHAT_IF_LONGEST:
        raise PeriodTooLong(f"a what-if spans at most {WHAT_IF_LONGEST.days} days "
                            "(`telecare alerts replay` takes longer periods)")
    result = run_replay(conn, ReplayRequest(start=start, end=end, citizen_ids=(citizen_id,),
                                            proposed={metric: bands}, tick_s=None,
                                            requested_by=caller.subject), now)
    return WhatIfResult(
        run_id=result.run_id, citizen_id=citizen_id, metric=metric, start=start, end=end,
        readings_and_events=result.items, findings=result.findings,
        alerts=[WhatIfAlert(rule=a.rule, severity=a.severity.value, count=a.count,
                            first_measured_at=a.first_measured_at,
                            last_measured_at=a.last_measured_at, is_current=a.is_current)
                for a in result.alerts])


# --- pauses -------------------------------------------------------------------------------

def _pause(row: Pause) -> PausePublic:
    return PausePublic(**asdict(row))


@router.get("/citizens/{citizen_id}/pauses", response_model=list[PausePublic],
            responses=responses(404, 422))
def list_pauses(citizen_id: UUID, _access: SeesCare, conn: DbDep, _caller: CallerDep) -> list[PausePublic]:
    """Every pause of the citizen's alerts, cancelled ones included, by start."""
    return [PausePublic(**row) for row in triage.citizen_pauses(conn, citizen_id)]


@router.post("/citizens/{citizen_id}/pauses", response_model=PausePublic, status_code=201,
             responses=responses(400, 403, 404, 422))
def add_pause(citizen_id: UUID, _access: ChangesCare, body: PauseCreate, conn: DbDep, caller: CallerDep,
              now: NowDep) -> PausePublic:
    """Hold the citizen's alerts from start (default now) until end (default: until
    cancelled); 422 when end is not after start."""
    return _pause(service.add_pause(conn, citizen_id, body.start or now, body.end, body.reason,
                                    caller.subject, now, note=body.note))


@router.get("/citizens/{citizen_id}/pauses/{pause_id}", response_model=PausePublic,
            responses=responses(404, 422))
def get_pause(citizen_id: UUID, _access: SeesCare, pause_id: PauseId, conn: DbDep,
              _caller: CallerDep) -> PausePublic:
    """One pause."""
    return _pause(_own_pause(conn, citizen_id, pause_id))


@router.delete("/citizens/{citizen_id}/pauses/{pause_id}", response_model=PausePublic,
               responses=responses(403, 404, 422))
def cancel_pause(citizen_id: UUID, _access: ChangesCare, pause_id: PauseId, conn: DbDep, _caller: CallerDep,
                 now: NowDep) -> PausePublic:
    """End a pause now (the engine then releases its held alerts); cancelling it again changes
    nothing."""
    _own_pause(conn, citizen_id, pause_id)
    return _pause(service.cancel_pause(conn, pause_id, now))


def _own_pause(conn: DbDep, citizen_id: UUID, pause_id: int) -> Pause:
    found = repository.pause(conn, pause_id)
    if found is None or found.citizen_id != citizen_id:
        raise PauseNotFound(f"citizen {citizen_id} has no pause {pause_id}")
    return found
