"""What the API returns, and the bodies it accepts."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema

from api.params import TIME_PATTERN, parse_time
from devices.catalogue import DeviceKind
from devices.models import DEVICE_ID_PATTERN


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class ReadingPublic(_Public):
    measured_at: datetime
    value: float
    device_id: str
    seq: int
    received_at: datetime
    late: bool
    delay_cause: Literal["device", "transit", "unknown"] | None = Field(
        description="why a late reading was late: held by the device (offline), waiting after "
        "it was sent (broker or Telecare backlog), or not known (the device sent no sent_at)")
    quality: Literal["valid", "implausible"] = Field(
        description="implausible: outside the catalogue's possible range (a sensor fault or the "
        "emergency itself); left out of buckets unless include_implausible=true")
    clock_suspect: bool = Field(description="the device clock was off when it sent this")


class BucketPublic(_Public):
    bucket_start: datetime
    min: float
    mean: float
    max: float
    count: int


class ReadingsPublic(_Public):
    citizen_id: UUID
    metric: str
    unit: str
    start: datetime
    end: datetime
    bucket_seconds: int | None = None  # present with buckets only
    readings: list[ReadingPublic] | None = None
    buckets: list[BucketPublic] | None = None


class DevicePublic(_Public):
    id: str
    kind: str
    model: str
    serial: str
    registered_at: datetime
    citizen_id: UUID | None
    online: bool | None
    last_seen_at: datetime | None
    battery_pct: float | None
    signal_dbm: float | None
    firmware: str | None
    status_reported_at: datetime | None
    clock_offset_s: float | None = Field(
        description="the device clock minus Telecare's, as last estimated from its messages")
    clock_suspect: bool | None = Field(
        description="the clock is off by more than transit delays explain")


class DeadLetterReason(_Public):
    reason: str
    count: int
    devices: int
    first_at: datetime
    last_at: datetime


class DeadLetterPublic(_Public):
    """One distinct message; `reason` is items_rejected when only some items were refused."""

    id: int
    received_at: datetime
    last_received_at: datetime
    deliveries: int
    topic: str
    device_id: str | None
    seq: int | None = Field(description="the lowest sequence number among its refused items")
    reason: str
    detail: str
    payload_bytes: int
    items: int = Field(description="how many of its items were refused")


class DeadLetterReport(_Public):
    since: datetime
    total: int
    by_reason: list[DeadLetterReason]
    recent: list[DeadLetterPublic]


class MetricPublic(_Public):
    code: str
    display: str
    ucum: str
    loinc: str
    mdc: int
    mdc_ref: str
    possible_min: float
    possible_max: float


class Health(_Public):
    status: str


class MaintenanceJobPublic(_Public):
    job: str
    last_success_at: datetime | None
    last_done: int
    unit: str
    failures: int = Field(description="failed runs since the last success")
    last_error_class: str | None
    last_error_sqlstate: str | None
    overdue: bool = Field(description="no success within twice the hourly schedule")


class Ready(_Public):
    status: Literal["ready", "degraded"] = Field(
        description="degraded: serving, but a maintenance job is failing or overdue")
    storage: str
    migrations: int
    maintenance: list[MaintenanceJobPublic]


class ProblemError(_Public):
    """One parameter at fault: where (e.g. ["query", "start"]) and what is wrong with it."""

    loc: list[str | int]
    msg: str


class Problem(_Public):
    """An error answer, RFC 9457 (application/problem+json)."""

    type: str = Field(description="a URI naming the kind of problem, e.g. "
                      "https://telecare.dev/problems/citizen_not_found")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    errors: list[ProblemError] = Field(
        default_factory=list, description="with 422 for a malformed parameter: each one at fault")


# --- Alerts and care (issue 6) ---------------------------------------------------------------

AlertState = Literal["open", "acknowledged", "resolved"]
SeverityName = Literal["yellow", "red"]
# What a nurse may record when she resolves an alert; `condition_cleared` is the system's own.
ResolveOutcome = Literal["contacted_citizen", "changed_treatment", "not_actionable",
                         "device_problem", "other"]
Outcome = Literal["contacted_citizen", "changed_treatment", "not_actionable", "device_problem",
                  "other", "condition_cleared"]
# Bands and free text as a client may send them: finite, bounded, so that nothing a client
# sends can overflow a column or come back as a number JSON cannot hold.
# Strict: a JSON true is not the number 1 (lax floats take booleans).
BandValue = Annotated[float, Field(ge=-100_000, le=100_000, allow_inf_nan=False, strict=True)]
# PostgreSQL text cannot hold NUL: refused as malformed, never sent to the database.
NO_NUL = "^[^\\x00]*$"
Note = Annotated[str, Field(max_length=2000, pattern=NO_NUL)]


# Times a client asks Telecare to store (a plan's start, a pause's end): years up to 9998 as
# written, so that the stored instant read back in UTC stays inside Python's datetime range
# whatever the offset (9999-12-31T23:59:59-23:59 is in year 10000 in UTC).
_ALL_YEARS = "19[7-9][0-9]|[2-9][0-9]{3}"
STORED_TIME_PATTERN = TIME_PATTERN.replace(
    _ALL_YEARS, "19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8]", 1)
assert STORED_TIME_PATTERN != TIME_PATTERN
_STORED_TIME = re.compile(STORED_TIME_PATTERN[1:-1])


def parse_stored_time(value: object) -> datetime:
    """An RFC 3339 date-time with a UTC offset, years 1970 to 9998 as written."""
    if not isinstance(value, str) or _STORED_TIME.fullmatch(value) is None:
        raise ValueError("must be an RFC 3339 date-time with a UTC offset, years 1970 to 9998, "
                         "e.g. 2026-11-23T08:00:00+01:00")
    return parse_time(value)


OptionalStoredTime = Annotated[datetime | None, PlainValidator(parse_stored_time), WithJsonSchema({
    "type": "string", "format": "date-time", "pattern": STORED_TIME_PATTERN,
    "description": "RFC 3339 with a UTC offset (Z or ±hh:mm), years 1970 to 9998 as written"})]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TeamPublic(_Public):
    id: UUID
    name: str
    created_at: datetime
    citizens: int = Field(description="how many citizens belong to the team")


class TeamCreate(_Request):
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]


class CitizenTeamPublic(_Public):
    citizen_id: UUID
    care_team_id: UUID | None = Field(description="None: the citizen belongs to no team yet")


class CitizenTeamAssign(_Request):
    care_team_id: UUID


class AlertPublic(_Public):
    """An alert as the queue shows it. Times measured_at are the data's; opened_at and
    updated_at are Telecare's clock."""

    id: int
    citizen_id: UUID
    care_team_id: UUID | None
    rule: str
    severity: SeverityName
    state: AlertState
    count: int = Field(description="how many findings fed it (repeats raise it)")
    first_measured_at: datetime
    last_measured_at: datetime
    opened_at: datetime
    updated_at: datetime
    is_current: bool = Field(description="false: it rests only on old data, is never escalated "
                             "or pushed, and says so")
    data_age_s: float | None
    delay_cause: str | None
    self_resolving: bool
    held: bool = Field(description="raised during a pause: neither pushed nor escalated")
    summary: str
    threshold_id: int | None
    threshold_version: int | None = Field(description="0: the plan's default bands")
    escalation_step: int
    escalate_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    outcome: Outcome | None
    note: str | None


class AlertPage(_Public):
    care_team_id: UUID
    total: int = Field(description="how many alerts match the filters, on every page")
    limit: int
    offset: int
    alerts: list[AlertPublic]


class ThresholdVersionPublic(_Public):
    """One version of a citizen's bands for one metric."""

    id: int
    metric: str
    version: int
    alert_low: float | None
    warning_low: float | None
    warning_high: float | None
    alert_high: float | None
    valid_from: datetime
    set_by: str
    set_at: datetime
    reason: str | None


class ThresholdInForce(_Public):
    """The bands in force for one metric: the citizen's own version, or the plan default."""

    metric: str
    version: int = Field(description="0: the default bands of the citizen's plans")
    id: int | None = Field(description="the thresholds row; None for plan defaults")
    source: Literal["citizen", "plan_default"]
    alert_low: float | None
    warning_low: float | None
    warning_high: float | None
    alert_high: float | None
    valid_from: datetime | None


class BaselinePublic(_Public):
    """One personal baseline: `learning` raises no anomaly alert; `active` compares her new
    readings with `usual` (the median she had) and its spread (docs/anomaly.md)."""

    series: str = Field(description="a metric code, or spo2_pulse / first_motion")
    status: Literal["learning", "active"]
    trained_at: datetime | None = Field(default=None, description="None: not trained yet")
    rows: int = Field(default=0, description="points learnt from")
    excluded: int = Field(default=0, description="points left out (pauses, clinical episodes)")
    first_at: datetime | None = None
    trained_through: datetime | None = None
    learning_until: datetime | None = Field(
        default=None, description="the learning period ends here (and 20 points are needed)")
    usual: float | None = None
    usual_spread: float | None = None


class MetricThresholds(_Public):
    """One metric's bands for a citizen: those in force now, and every stored version."""

    metric: str
    in_force: ThresholdInForce | None = Field(
        description="None: neither the citizen nor their plans set bands for this metric")
    versions: list[ThresholdVersionPublic]


class ThresholdSet(_Request):
    """New bands for one metric: alert_low < warning_low < warning_high < alert_high, each
    optional (SpO2 has no upper bands). Starts a new version."""

    alert_low: BandValue | None = None
    warning_low: BandValue | None = None
    warning_high: BandValue | None = None
    alert_high: BandValue | None = None
    valid_from: OptionalStoredTime = Field(default=None, description="default: now")
    reason: Note | None = None


class ThresholdWhatIf(_Request):
    """Bands a nurse is considering for one metric, and the stored period to try them on."""

    alert_low: BandValue | None = None
    warning_low: BandValue | None = None
    warning_high: BandValue | None = None
    alert_high: BandValue | None = None
    start: OptionalStoredTime = Field(default=None, description="default: 30 days before end")
    end: OptionalStoredTime = Field(default=None, description="default: now")


class WhatIfAlert(_Public):
    rule: str
    severity: SeverityName
    count: int
    first_measured_at: datetime
    last_measured_at: datetime
    is_current: bool


class WhatIfResult(_Public):
    """What the proposed bands would have raised over the period, on the measured-time clock,
    with the production rules; stored as a replay run, told to nobody."""

    run_id: int
    citizen_id: UUID
    metric: str
    start: datetime
    end: datetime
    readings_and_events: int
    findings: int
    alerts: list[WhatIfAlert]


class FindingPublic(_Public):
    occurrence: str = Field(description="what the finding is about: a reading, event or window")
    severity: SeverityName
    measured_at: datetime
    evaluated_at: datetime
    is_current: bool
    data_age_s: float | None
    delay_cause: str | None
    detail: dict[str, Any]


class ReadingSeriesPublic(_Public):
    metric: str
    unit: str
    readings: list[ReadingPublic]


class AlertExplained(_Public):
    """One alert with what explains it: the rule's explanation (value, band, trend or NEWS2
    parts), the threshold version that raised it, its findings, and the readings around it."""

    alert: AlertPublic
    explanation: dict[str, Any]
    threshold: ThresholdVersionPublic | None = Field(
        description="the citizen's version that raised it; None for plan defaults (version 0) "
        "and for rules without bands")
    findings: list[FindingPublic]
    readings_start: datetime
    readings_end: datetime
    readings: list[ReadingSeriesPublic] = Field(
        description="each metric the alert is about, a day either side of its findings")


class AlertHistoryEntry(_Public):
    id: int
    stream_position: int | None = Field(description="the event id on the team's stream: "
                                                    "drawn when the change committed, "
                                                    "increasing in that order")
    alert_id: int
    at: datetime
    action: Literal["opened", "repeated", "worsened", "acknowledged", "resolved",
                    "self_resolved", "escalated", "released"]
    actor: str
    severity: SeverityName
    state: AlertState
    pushed: bool
    detail: dict[str, Any]


class AcknowledgeRequest(_Request):
    note: Note | None = None


class ResolveRequest(_Request):
    outcome: ResolveOutcome
    note: Note | None = None


PlanName = Literal["copd", "heart_failure", "diabetes", "hypertension", "frail_alone"]


class PlanPublic(_Public):
    """A period during which the citizen follows a plan template."""

    id: int
    citizen_id: UUID
    plan: PlanName
    valid_from: datetime
    valid_to: datetime | None = Field(description="exclusive; None: followed until ended")
    settings: dict[str, Any] = Field(description="overrides of the template's schedule")
    set_by: str
    set_at: datetime


class PlanStart(_Request):
    valid_from: OptionalStoredTime = Field(default=None, description="default: now")
    settings: dict[str, Any] = Field(default_factory=dict, max_length=50)


PauseReason = Literal["hospital_admission", "holiday", "other"]


class PausePublic(_Public):
    """A period during which the citizen's alerts are held and missed measurements not counted."""

    id: int
    citizen_id: UUID
    start: datetime
    end: datetime | None = Field(description="exclusive; None: until cancelled")
    in_force_until: datetime | None = Field(
        description="its end or, when cancelled earlier, its cancellation; None: open")
    reason: PauseReason
    note: str | None
    created_by: str
    created_at: datetime
    cancelled_at: datetime | None


class PauseCreate(_Request):
    start: OptionalStoredTime = Field(default=None, description="default: now")
    end: OptionalStoredTime = Field(default=None, description="exclusive, after start; default: open")
    reason: PauseReason
    note: Note | None = None


class RoleContact(_Request):
    kind: Literal["role"]
    target: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL,
                                 description="a role on the team, e.g. on_call_nurse")]


class WebhookContact(_Request):
    kind: Literal["webhook"]
    target: Annotated[str, Field(pattern="^[0-9]{1,18}$", description="the webhook's id")]


class StreamContact(_Request):
    kind: Literal["stream"]
    target: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]


Contact = Annotated[RoleContact | WebhookContact | StreamContact, Field(discriminator="kind")]


class EscalationStepBody(_Request):
    after_s: Annotated[int, Field(gt=0, le=7 * 24 * 3600, description=(
        "seconds from when the alert started needing attention; strictly increasing"))]
    contact: Contact


class EscalationPolicyBody(_Request):
    steps: Annotated[list[EscalationStepBody], Field(min_length=1, max_length=10)]


class EscalationPolicyPublic(_Public):
    care_team_id: UUID
    is_default: bool = Field(description="the team has no policy of its own: the default chain")
    steps: list[EscalationStepBody]
    updated_at: datetime | None


# An http(s) URL: a host name or IPv4 address of labels of 1-63 characters, a port 1-65535,
# and a path in printable ASCII (anything else percent-encoded; spelt out, as "\s" means other
# characters in other regex dialects). IPv6 literals are left out: "[0]" looks like one.
_LABEL = "[A-Za-z0-9_-]{1,63}"
_PORT = "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
WEBHOOK_URL = rf"^https?://({_LABEL}\.)*{_LABEL}\.?(:{_PORT})?([/?#][!-~]*)?$"


class WebhookCreate(_Request):
    url: Annotated[str, Field(max_length=2048, pattern=WEBHOOK_URL,
                              description="where every pushed change of the team is POSTed")]


class WebhookSwitch(_Request):
    active: bool = Field(strict=True, description="false: nothing new is queued for it, and what is "
                                     "queued is not sent (given up)")


class WebhookPublic(_Public):
    id: int
    care_team_id: UUID
    url: str
    active: bool
    created_at: datetime


class WebhookCreated(WebhookPublic):
    secret: str = Field(description="signs every delivery (X-Telecare-Signature); shown only "
                                    "in this answer")


# --- Sign-in (issue 7) ----------------------------------------------------------------------

class TokenResponse(_Public):
    """OAuth2's token answer (RFC 6749 5.1), plus the refresh token."""

    access_token: str = Field(description="send as `Authorization: Bearer ...`")
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds the access token is valid")
    refresh_token: str = Field(description="for POST /v1/auth/refresh; used once")


class RefreshRequest(_Request):
    refresh_token: Annotated[str, Field(min_length=1, max_length=200)]


class SignedIn(_Public):
    id: UUID
    username: str
    role: str
    expires_at: datetime = Field(description="when the access token sent expires")


# --- Relations (issue 7): team members, proxies ----------------------------------------------

USERNAME_PATTERN = "^[a-z0-9][a-z0-9._@-]{0,99}$"
Username = Annotated[str, Field(pattern=USERNAME_PATTERN, max_length=100)]
ProxyKind = Literal["readings", "alerts", "devices", "care"]


class MemberPublic(_Public):
    user_id: UUID
    username: str
    display_name: str
    added_at: datetime


class ProxyCreate(_Request):
    relative: Username = Field(description="the username of a user with the role relative")
    kinds: list[ProxyKind] = Field(min_length=1, max_length=4,
                                   description="what the relative may see")
    valid_from: OptionalStoredTime = Field(default=None, description="default: now")
    valid_until: OptionalStoredTime = Field(default=None,
                                            description="exclusive, after valid_from; default: open")


class ProxyPublic(_Public):
    """What a relative may see of the citizen: data of `kinds` measured within the validity,
    while it lasts and is not revoked."""

    id: int
    citizen_id: UUID
    relative_id: UUID
    kinds: list[ProxyKind]
    valid_from: datetime
    valid_until: datetime | None
    granted_by: str
    granted_at: datetime
    revoked_at: datetime | None


class AuditEntryPublic(_Public):
    """One look at or change of a citizen's data. A citizen reading their own record sees
    when, in which role, what and why; who (user, route) only an administrator sees."""

    id: int
    at: datetime
    role: str
    action: Literal["read", "search", "export", "change"]
    what: str
    purpose: str
    citizen_id: UUID | None
    user_id: UUID | None = None
    username: str | None = None
    route: str | None = None


Condition = Annotated[str, Field(pattern="^[a-z][a-z0-9_]{0,39}$")]


class CitizenPublic(_Public):
    """A citizen's record: the identity is shown only to those who may see the citizen."""

    id: UUID
    display_name: str
    conditions: list[str]
    care_team_id: UUID | None
    created_at: datetime
    discharged_at: datetime | None


class CitizenCreate(_Request):
    display_name: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
    conditions: Annotated[list[Condition], Field(max_length=20)] = []
    care_team_id: UUID | None = None


class CitizenDischarge(_Request):
    at: OptionalStoredTime = Field(default=None, description="default: now")


class DeviceCreate(_Request):
    id: Annotated[str, Field(pattern=DEVICE_ID_PATTERN)]
    kind: DeviceKind
    model: Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]
    serial: Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]


class DeviceHolderSet(_Request):
    citizen_id: UUID
    valid_from: OptionalStoredTime = Field(default=None, description="default: now")


RoleName = Literal["administrator", "nurse", "project_lead", "citizen", "relative", "service"]


class UserPublic(_Public):
    id: UUID
    username: str
    display_name: str
    role: RoleName
    created_at: datetime
    disabled_at: datetime | None
    blocked: bool = Field(description="failed sign-ins hold the next one up now")


class UserCreate(_Request):
    username: Username
    display_name: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
    role: RoleName
    password: Annotated[str, Field(min_length=12, max_length=1024, pattern=NO_NUL)]


class PasswordSet(_Request):
    password: Annotated[str, Field(min_length=12, max_length=1024, pattern=NO_NUL)]


class UserCitizenLink(_Request):
    citizen_id: UUID


class ErasureKind(_Public):
    """One kind of a citizen's data in an erasure: how many rows go, how many stay and why."""

    delete: int = Field(description="rows past their retention: deleted (a dry run: would be)")
    keep: int = Field(description="rows within their retention: kept")
    retention_days: int | None = Field(description="the retention of this kind; null: derived "
                                       "data, always erased")
    counted_from: str
    rule: str = Field(description="the rule the retention follows")
    reason: str = Field(description="why the kept rows are kept")
    next_may_go: datetime | None = Field(description="when the first kept row may go")
    all_may_go: datetime | None = Field(description="when the last kept row may go")


class ErasureProcessing(_Public):
    """What an erasure stops (a dry run: would stop)."""

    devices_taken_back: list[str]
    plans_ended: int = Field(description="plans in force, ended now (one not yet begun is "
                             "deleted: kinds.plans)")
    proxies_revoked: int
    pilot_enrolments_ended: int
    user_disabled: str | None = Field(description="the citizen's own user, disabled")


class ErasureReport(_Public):
    """An erasure of a citizen within the retention rules (docs/access.md, Citizen rights)."""

    citizen_id: UUID
    at: datetime
    dry_run: bool
    last_entry: datetime | None = Field(description="the newest entry in the care record")
    kinds: dict[str, ErasureKind]
    processing: ErasureProcessing
    identity_kept: bool
    identity: str
