"""Pilots, enrolments, and the pseudonymised aggregates a project lead sees."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict

# Counts of 1 to SUPPRESS_BELOW - 1 are shown as SUPPRESSED (docs/access.md, "Small cells").
SUPPRESS_BELOW = 5
SUPPRESSED: Literal["<5"] = "<5"
Count = int | Literal["<5"]


@dataclass(frozen=True)
class Viewer:
    """Who asks about pilots: everything (an administrator, the local operator), or the user
    whose led pilots are visible. `user_id` None only for the local operator."""

    user_id: UUID | None
    everything: bool


@dataclass(frozen=True)
class Pilot:
    id: UUID
    name: str
    description: str
    starts_at: datetime
    ends_at: datetime | None
    created_by: str
    created_at: datetime


@dataclass(frozen=True)
class Enrolment:
    id: int
    pilot_id: UUID
    citizen_id: UUID
    valid_from: datetime
    valid_until: datetime | None
    enrolled_by: str
    enrolled_at: datetime


@dataclass(frozen=True)
class Lead:
    username: str
    display_name: str
    added_at: datetime


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class MetricSummary(_Frozen):
    """Readings of one metric, and how many of the measurements the plans asked for came."""

    metric: str
    readings: Count
    citizens: Count
    scheduled: Count
    on_time: Count
    # on_time / scheduled, when at least SUPPRESS_BELOW were scheduled.
    adherence: float | None


class AlertSummary(_Frozen):
    rule: str
    severity: str
    alerts: Count
    citizens: Count


class OutcomeSummary(_Frozen):
    outcome: str
    alerts: Count


class Acknowledgement(_Frozen):
    acknowledged: Count
    # Whole minutes from opened to acknowledged; only of at least SUPPRESS_BELOW alerts.
    median_minutes: int | None


class CitizenRow(_Frozen):
    """One citizen of the pilot under their pseudonym: counts only, nothing finer than a day."""

    pseudonym: str
    enrolled_days: Count
    readings: Count
    alerts: Count
    red_alerts: Count
    adherence: float | None


class Aggregates(_Frozen):
    pilot_id: UUID
    name: str
    # Local (Copenhagen) days, both included.
    from_day: date
    to_day: date
    suppressed_below: int
    citizens_enrolled: Count
    readings: list[MetricSummary]
    alerts: list[AlertSummary]
    time_to_acknowledge: Acknowledgement
    outcomes: list[OutcomeSummary]
    # Empty, and citizens_shown false, when fewer than SUPPRESS_BELOW citizens took part.
    citizens_shown: bool
    citizens: list[CitizenRow]
