"""Personal baselines: the one detector (anomaly/detector.py, the configuration NAB is scored
with) trained on one citizen's own history of one series, then frozen.

Training streams the series' points in time order through a fresh detector, leaving out the
points inside excluded periods (open clinical episodes, pauses: what is abnormal must not become
the baseline), and freezes it. Until the series has been watched for the learning period and the
detector has learnt enough rows, the baseline is `learning`: it has no state and scores nothing.
Scoring a new point peeks at the frozen detector with the points measured since training (which
the short windows need) over its level features (LEVEL_FEATURES) and learns nothing; learning is
the next retraining's job.

A baseline is plain data: its state is the frozen detector's JSON (numbers and lists, no pickle),
and a baseline restored from it scores exactly as the one that was stored.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from anomaly.detector import Detector, DetectorConfig, Explanation

Point = tuple[datetime, float]
Period = tuple[datetime, datetime | None]

LEARNING = "learning"
ACTIVE = "active"
# What a citizen's value is compared on: its level, recent means and the usual level at this time
# of day. The volatility features stay out: in a few weeks of one or two readings a day, a mean
# change over 32 steps hardly varies, so its distribution is too narrow to call rare on (a pulse
# of exactly her usual 70 scored 0.86 on volatility_32 in a test), and a nurse has no use for "her
# readings vary a little more than usual".
LEVEL_FEATURES = frozenset({"value", "mean_4", "mean_16", "rhythm"})


@dataclass(frozen=True)
class BaselineConfig:
    """How personal baselines are learnt (the detector's own configuration is NAB's)."""

    # A series is watched this long (from its first point) before it may raise anything.
    learning_period: timedelta = timedelta(days=14)
    # Retraining looks this far back.
    training_window: timedelta = timedelta(days=60)
    detector: DetectorConfig = field(default_factory=DetectorConfig)

    def __post_init__(self) -> None:
        if self.learning_period < timedelta(0) or self.training_window <= timedelta(0):
            raise ValueError("learning_period must not be negative, training_window must be positive")


# What a baseline takes in memory, roughly (Baseline.footprint_bytes).
FOOTPRINT_BASE_BYTES, FOOTPRINT_PER_DISTANCE_BYTES = 12_288, 12


@dataclass(frozen=True)
class Baseline:
    """What one series of one citizen has learnt by `trained_at`."""

    series: str
    trained_at: datetime
    rows: int  # points trained on
    excluded: int  # points left out (inside an excluded period)
    first_at: datetime | None  # the first point seen in the training window
    trained_through: datetime | None  # the last point trained on
    learning_until: datetime | None  # when the learning period ends (None: no point yet)
    # The frozen detector (None while learning); `state` gives it as JSON.
    detector: Detector | None = field(default=None, compare=False, repr=False)
    # What a derived series was computed with (e.g. the scales of its components), so that
    # scoring computes a new point the way training did.
    parameters: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def status(self) -> str:
        return ACTIVE if self.detector is not None else LEARNING

    @property
    def state(self) -> dict[str, Any] | None:
        return self.detector.state() if self.detector is not None else None

    @classmethod
    def restored(cls, state: dict[str, Any] | None, **fields: Any) -> Baseline:
        """A baseline as stored: `state` is what `state` gave (None while learning)."""
        return cls(detector=Detector.from_state(state) if state is not None else None, **fields)

    def footprint_bytes(self) -> int:
        """About what the baseline takes in memory: measured with tracemalloc on trained
        baselines, some 12 KB of objects and 12 bytes per fitted distance (20 KB for two readings
        a day over 60 days; about 155 KB for a dense series, whose history of 2,000 a feature is full)."""
        held = self.detector.fitted_distances() if self.detector is not None else 0
        return FOOTPRINT_BASE_BYTES + FOOTPRINT_PER_DISTANCE_BYTES * held

    def value_feature(self) -> tuple[float, float] | None:
        """The usual value and its robust spread (what a nurse reads as "her normal")."""
        if self.detector is None:
            return None
        return self.detector.usual()

    def score(self, at: datetime, value: float, since: Sequence[Point] = (),
              features: Collection[str] | None = LEVEL_FEATURES) -> tuple[float, Explanation] | None:
        """The score of `value` at `at` (None while learning), after the points `since` that
        came after training (oldest first), over the level features unless told otherwise."""
        detector = self.detector
        if detector is None:
            return None
        return detector.peek(at, value, since, features)


def is_excluded(at: datetime, periods: Sequence[Period]) -> bool:
    return any(start <= at and (end is None or at < end) for start, end in periods)


def train(series: str, points: Sequence[Point], excluded: Sequence[Period], now: datetime,
          config: BaselineConfig | None = None, *, resolution: float = 0.0,
          parameters: Mapping[str, Any] | None = None, until: datetime | None = None) -> Baseline:
    """A baseline of `series` from its `points` (time order) within the training window before
    `now` (and before `until`, when given), without those inside `excluded`; `resolution`: the
    values' smallest step (0: unknown); `parameters`: what the points were derived with."""
    cfg = config or BaselineConfig()
    since = now - cfg.training_window
    chosen = points[bisect_left([at for at, _ in points], since):]
    end = min(now, until) if until is not None else now
    chosen = [(at, value) for at, value in chosen if at < end]
    kept = [(at, value) for at, value in chosen if not is_excluded(at, excluded)]
    left_out = len(chosen) - len(kept)
    # The detector keeps its last `history` values per feature: older ones would only be
    # streamed through to be forgotten (a series sent every second has millions in a window).
    kept = kept[-cfg.detector.history:]
    first_at = chosen[0][0] if chosen else None
    learning_until = first_at + cfg.learning_period if first_at is not None else None
    detector = Detector(replace(cfg.detector, resolution=resolution))
    for at, value in kept:
        detector.update(at, value)
    enough = len(kept) >= cfg.detector.learning_rows
    learnt = learning_until is not None and learning_until <= now and enough
    if learnt:
        detector.freeze()
    return Baseline(series=series, trained_at=now, rows=len(kept), excluded=left_out,
                    first_at=first_at, trained_through=kept[-1][0] if kept else None,
                    learning_until=learning_until, detector=detector if learnt else None,
                    parameters=parameters)
