"""What the API returns."""

from __future__ import annotations

from datetime import datetime
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


class DeadLetterReason(_Public):
    reason: str
    count: int
    devices: int
    first_at: datetime
    last_at: datetime


class DeadLetterPublic(_Public):
    id: int
    received_at: datetime
    topic: str
    device_id: str | None
    seq: int | None
    reason: str
    detail: str
    payload_bytes: int


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


class Ready(_Public):
    status: str
    storage: str
    migrations: int


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
