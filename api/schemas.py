"""What the API returns."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


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
