"""What rules see and what they return: readings and events as the rules get them, thresholds,
findings. Rules are pure functions of these (alerts/rules/); the lifecycle turns findings
into alerts (alerts/lifecycle.py)."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, model_validator

from anomaly.baseline import Baseline
from devices.catalogue import IMPLAUSIBLE


class Severity(StrEnum):
    """Yellow: look today. Red: look now."""

    YELLOW = "yellow"
    RED = "red"

    @property
    def rank(self) -> int:
        return 2 if self is Severity.RED else 1


class Bands(BaseModel):
    """Four bands of one metric; None means the band is absent (SpO2 has no upper bands)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alert_low: float | None = None
    warning_low: float | None = None
    warning_high: float | None = None
    alert_high: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Bands:
        present = [(name, value) for name, value in (
            ("alert_low", self.alert_low), ("warning_low", self.warning_low),
            ("warning_high", self.warning_high), ("alert_high", self.alert_high))
            if value is not None]
        for (low_name, low), (high_name, high) in zip(present, present[1:], strict=False):
            if not low < high:
                raise ValueError(f"{low_name} must be below {high_name}")
        return self


@dataclass(frozen=True)
class Threshold:
    """The bands in force for one citizen and metric, and which version they are: `id` is the
    thresholds row (None for a plan's default bands, which are version 0)."""

    metric: str
    bands: Bands
    version: int
    id: int | None = None
    valid_from: datetime | None = None


@dataclass(frozen=True)
class ReadingView:
    """A stored reading as the rules see it, implausible ones included with their mark."""

    device_id: str
    metric: str
    measured_at: datetime
    seq: int
    value: float
    received_at: datetime
    late: bool = False
    delay_cause: str | None = None
    quality: str = "valid"
    clock_suspect: bool = False

    @property
    def occurrence(self) -> str:
        """The identity of the reading, as a finding about it records."""
        return f"r:{self.device_id}:{self.metric}:{self.measured_at.isoformat()}:{self.seq}"


@dataclass(frozen=True)
class EventView:
    """A stored event (button press, sensor event, screen answer) as the rules see it."""

    device_id: str
    kind: str
    measured_at: datetime
    seq: int
    received_at: datetime
    data: dict[str, Any] = field(default_factory=dict)
    late: bool = False
    delay_cause: str | None = None
    clock_suspect: bool = False

    @property
    def occurrence(self) -> str:
        return f"e:{self.device_id}:{self.measured_at.isoformat()}:{self.seq}"


# How old data may be and still count as current. A reading held back by the device (it was
# offline) is old whatever its age; one delayed in transit (Telecare's own backlog, the
# broker) is current while it is recent.
STALE_AFTER = timedelta(hours=1)


def is_current(measured_at: datetime, late: bool, delay_cause: str | None, now: datetime,
               stale_after: timedelta = STALE_AFTER) -> bool:
    """Whether a finding about data measured at `measured_at` may be treated as news now."""
    if now - measured_at > stale_after:
        return False
    return not late or delay_cause == "transit"


@dataclass(frozen=True)
class Finding:
    """What a rule concluded at one point. `occurrence` identifies what it is about (the
    reading, event or time window): the same finding recorded twice counts once.
    `clears` marks the end of a condition (the device is back online): it resolves an open
    self-resolving alert of the rule and raises nothing."""

    rule: str
    severity: Severity
    occurrence: str
    measured_at: datetime
    summary: str
    explanation: dict[str, Any] = field(default_factory=dict)
    is_current: bool = True
    data_age_s: float | None = None
    delay_cause: str | None = None
    threshold_id: int | None = None
    threshold_version: int | None = None
    self_resolving: bool = False
    clears: bool = False
    # Raised during a pause (hospital admission, holiday): recorded, but neither pushed nor
    # escalated until the pause ends. The emergency button is never held.
    held: bool = False
    # A nudge to the citizen's home screen instead of an alert (the first missed window of a
    # measurement): sent once per occurrence when current and not held; the team sees nothing.
    reminder: bool = False


@dataclass(frozen=True)
class DeviceState:
    """What the registry knows of one of the citizen's devices, for the silence rules."""

    device_id: str
    kind: str
    online: bool | None
    status_received_at: datetime | None
    last_seen_at: datetime | None
    battery_pct: float | None
    # Dead letters from this device within the silence rule's look-back window.
    recent_dead_letters: int = 0


class Series:
    """One metric's plausible readings, oldest first (by measured time, then sequence number),
    for windows cut by bisection: rules ask once per new reading, and a citizen whose oximeter
    sends every second has a long history. The lists may be shared with a longer history;
    [lo, hi) is the part this series covers, and indexes are into the shared lists."""

    def __init__(self, readings: list[ReadingView], times: list[datetime], values: list[float],
                 lo: int = 0, hi: int | None = None) -> None:
        self.readings, self.times, self.values = readings, times, values
        self.lo, self.hi = lo, len(readings) if hi is None else hi

    @classmethod
    def of(cls, readings: Iterable[ReadingView], metric: str) -> Series:
        """The plausible readings of `metric` among `readings`."""
        chosen = sorted((r for r in readings if r.metric == metric and r.quality != IMPLAUSIBLE),
                        key=lambda r: (r.measured_at, r.seq))
        return cls(chosen, [r.measured_at for r in chosen], [r.value for r in chosen])

    def span(self, start: datetime, end: datetime, *, include_end: bool = True) -> tuple[int, int]:
        """Index range [lo, hi) of the readings measured within [start, end] (or [start, end))."""
        hi = (bisect_right if include_end else bisect_left)(self.times, end, self.lo, self.hi)
        return bisect_left(self.times, start, self.lo, hi), hi

    def latest(self, start: datetime, end: datetime) -> ReadingView | None:
        """The latest (by measured time, then sequence number) within [start, end]."""
        lo, hi = self.span(start, end)
        return self.readings[hi - 1] if hi > lo else None


_NO_READINGS = Series([], [], [])


@dataclass(frozen=True)
class CitizenContext:
    """Everything the rules may look at for one citizen at one evaluation: their plans, the
    thresholds in force, recent readings and events (oldest first), the new items that
    triggered this evaluation (empty for a clock tick), their devices, and pauses."""

    citizen_id: UUID
    plans: tuple[str, ...]
    thresholds: dict[str, Threshold]
    readings: tuple[ReadingView, ...] = ()
    events: tuple[EventView, ...] = ()
    new_readings: tuple[ReadingView, ...] = ()
    new_events: tuple[EventView, ...] = ()
    devices: tuple[DeviceState, ...] = ()
    # (start, end or None) of pauses overlapping the evaluated period.
    pauses: tuple[tuple[datetime, datetime | None], ...] = ()
    plan_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per metric, `readings` as a Series, when the builder has them at hand (a metric missing
    # then has none); None: computed when asked.
    prepared_series: Mapping[str, Series] | None = field(default=None, compare=False, repr=False)
    # Personal baselines by series (alerts/baselines.py), as last retrained.
    baselines: Mapping[str, Baseline] = field(default_factory=dict, compare=False, repr=False)

    def series(self, metric: str) -> Series:
        """The plausible readings of `metric` in `readings`."""
        if self.prepared_series is None:
            return Series.of(self.readings, metric)
        return self.prepared_series.get(metric) or _NO_READINGS

    def paused_at(self, at: datetime) -> bool:
        return any(start <= at and (end is None or at < end) for start, end in self.pauses)
