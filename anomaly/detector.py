"""One causal, streaming anomaly detector for a single series: a score in [0, 1] and why.

Each new value is turned into a handful of features: the value itself, the means of the last few
values, its deviation from the usual value at this time of day (rhythm), and the mean absolute
change over the last few steps (volatility). Every feature keeps the recent distribution of its own
values; the new value's surprise is how rare its distance from that distribution's median is, as
-log10 of a tail probability: the empirical share of past distances at least as large while there
are any, and beyond the largest seen an exponential tail fitted to the top tenth. The most
surprising feature (less log10 of the number of features tried, a Bonferroni correction) is the
row's surprise. Because each feature is compared with its own past distribution, a bimodal square
wave or a series whose means are always autocorrelated is not surprising by construction, and one
configuration fits series of every scale.

A surprise at or above the alarm level is a detection; the next rows are held (scored 0) so that
one excursion raises one alarm rather than one per row. The score is surprise / (surprise + alarm
level): 0.5 at the alarm level, approaching 1 for ever rarer values.

Causal: a row's score depends only on it and on the rows before it. The state is plain numbers
(`Detector.state()` gives a JSON-able dict, `Detector.from_state` restores it) and a restored
detector gives exactly the scores the original would have.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_LOG10 = math.log(10.0)
_MAD_TO_SIGMA = 1.4826
STATE_VERSION = 1
# Beyond this a value's distance over the tail's scale can overflow to an infinite surprise and a
# NaN score (1.7e308 after ordinary values did); no reading comes close.
MAX_MAGNITUDE = 1e100


@dataclass(frozen=True)
class DetectorConfig:
    """The one configuration, the same for every series (tuned on NAB, docs/nab.md)."""

    # Past values of each feature kept as its distribution, and how often (rows) the distribution
    # is refitted; between refits the last fit is used, which keeps a row to tens of microseconds.
    history: int = 2000
    refit_every: int = 20
    # Rows a feature must have seen before it is scored: until then the detector is learning.
    learning_rows: int = 50
    # Means of the last w values, w = 1 being the value itself.
    windows: tuple[int, ...] = (1, 4, 16)
    # Mean absolute change between consecutive values over the last w steps.
    volatility: tuple[int, ...] = (4, 32)
    # Time-of-day slots for the rhythm feature and the values kept per slot.
    rhythm_slot_seconds: int = 1800
    rhythm_depth: int = 24
    # Floor of the exponential tail's scale, as a share of the feature's standard deviation, so that
    # a feature that never varied does not call a rounding error infinitely surprising.
    scale_floor: float = 0.05
    # Surprise (-log10 of a tail probability, after the Bonferroni correction) of a detection,
    # and the rows held after one.
    alarm_surprise: float = 3.0
    hold_rows: int = 100

    def __post_init__(self) -> None:
        for name in ("windows", "volatility"):
            widths = getattr(self, name)
            if not widths or list(widths) != sorted(set(widths)) or widths[0] < 1:
                raise ValueError(f"{name} must be increasing positive widths, got {widths}")
        if not 2 <= self.learning_rows <= self.history:
            raise ValueError("learning_rows must be between 2 and history")
        if self.refit_every < 1 or self.rhythm_slot_seconds < 1 or self.rhythm_depth < 3:
            raise ValueError("refit_every and rhythm_slot_seconds must be positive, rhythm_depth at least 3")
        if self.alarm_surprise <= 0 or self.hold_rows < 0 or self.scale_floor < 0:
            raise ValueError("alarm_surprise must be positive, hold_rows and scale_floor not negative")


@dataclass(frozen=True)
class Explanation:
    """Why a value scored as it did: which feature, its baseline and spread, how far out it was."""

    feature: str  # "value", "mean_4", "rhythm", "volatility_32", ... or "learning"
    observed: float  # the feature's value at this row (e.g. the mean of the last 4 values)
    baseline: float  # the median of the feature's recent values
    spread: float  # their robust spread (1.4826 x median absolute deviation, floored)
    deviation: float  # (observed - baseline) / spread
    surprise: float  # -log10 of the tail probability, Bonferroni-corrected
    held: bool = False  # scored 0 because a detection was made within the last hold_rows rows


LEARNING = Explanation("learning", 0.0, 0.0, 0.0, 0.0, 0.0)


class _Ring:
    """The last `size` values of a feature, in a fixed array (insertion order is kept in the state)."""

    def __init__(self, size: int) -> None:
        self.buf: FloatArray = np.zeros(size)
        self.pos = 0
        self.count = 0

    def push(self, x: float) -> None:
        self.buf[self.pos] = x
        self.pos = (self.pos + 1) % len(self.buf)
        self.count = min(self.count + 1, len(self.buf))

    def values(self) -> FloatArray:
        return self.buf if self.count == len(self.buf) else self.buf[:self.count]


class _Feature:
    """The recent distribution of one feature, with an exponential tail beyond its largest distance."""

    def __init__(self, name: str, history: int) -> None:
        self.name = name
        self.ring = _Ring(history)
        self.center = 0.0
        self.spread = 0.0
        self.distances: list[float] = []  # sorted |x - center| of the ring at the last fit
        self.tail_scale = 1.0

    def fit(self, scale_floor: float) -> None:
        past = self.ring.values()
        self.center = center = float(np.median(past))
        distances = np.sort(np.abs(past - center))
        n = len(distances)
        self.distances = distances.tolist()
        q90 = float(distances[int(0.9 * (n - 1))])
        top = distances[distances > q90]
        # The mean excess over the 90th percentile is the exponential tail's scale (its MLE).
        excess = float(top.mean()) - q90 if len(top) else 0.0
        floor = max(scale_floor * float(past.std()), 1e-9 * max(1.0, abs(center)))
        self.tail_scale = max(excess, floor)
        self.spread = max(float(distances[n // 2]) * _MAD_TO_SIGMA, floor)

    def surprise(self, x: float) -> float:
        """-log10 of the probability of a distance from the center at least as large as x's."""
        distance = abs(x - self.center)
        n = len(self.distances)
        at_least = n - bisect_left(self.distances, distance)
        if at_least > 0:
            return -math.log10((at_least + 0.5) / (n + 1))
        beyond = (distance - self.distances[-1]) / self.tail_scale
        return -math.log10(0.5 / (n + 1)) + beyond / _LOG10

    def state(self) -> dict[str, Any]:
        return {"ring": self.ring.buf.tolist(), "pos": self.ring.pos, "count": self.ring.count,
                "center": self.center, "spread": self.spread, "distances": self.distances,
                "tail_scale": self.tail_scale}

    def restore(self, state: dict[str, Any]) -> None:
        ring = np.array(state["ring"], dtype=np.float64)
        if ring.shape != self.ring.buf.shape:
            raise ValueError(f"feature {self.name}: history of {len(ring)} values, expected "
                             f"{len(self.ring.buf)}")
        self.ring.buf, self.ring.pos, self.ring.count = ring, int(state["pos"]), int(state["count"])
        self.center, self.spread = float(state["center"]), float(state["spread"])
        self.distances = [float(d) for d in state["distances"]]
        self.tail_scale = float(state["tail_scale"])


def _window_means(recent: deque[float], widths: tuple[int, ...],
                  features: list[_Feature]) -> list[tuple[_Feature, float]]:
    """The mean of the last w values for each width w (while at least w have been seen)."""
    means = []
    total = 0.0
    for k, x in enumerate(reversed(recent), start=1):
        total += x
        if k in widths:
            means.append((features[widths.index(k)], total / k))
    return means


def _seconds_of_day(timestamp: datetime) -> int:
    return timestamp.hour * 3600 + timestamp.minute * 60 + timestamp.second


class Detector:
    """The streaming detector of one series: `update` each value in time order."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = cfg = config or DetectorConfig()
        self._features = [_Feature("value" if w == 1 else f"mean_{w}", cfg.history) for w in cfg.windows]
        self._volatility = [_Feature(f"volatility_{w}", cfg.history) for w in cfg.volatility]
        self._rhythm = _Feature("rhythm", cfg.history)
        self._bonferroni = math.log10(len(cfg.windows) + len(cfg.volatility) + 1)
        self._recent: deque[float] = deque(maxlen=max(cfg.windows))
        self._changes: deque[float] = deque(maxlen=max(cfg.volatility))
        self._slots: dict[int, deque[float]] = {}
        self._previous: float | None = None
        self._rows = 0
        self._hold = 0

    def update(self, timestamp: datetime, value: float) -> tuple[float, Explanation]:
        """The score of this value given the series so far, then learn from it."""
        if not math.isfinite(value):
            raise ValueError(f"value {value!r} is not a finite number")
        if abs(value) > MAX_MAGNITUDE:
            raise ValueError(f"value {value!r} is beyond the detector's range (±{MAX_MAGNITUDE:g})")
        cfg = self.config
        self._rows += 1
        observed = self._observe(timestamp, value)
        refit = self._rows % cfg.refit_every == 0
        best: tuple[float, _Feature, float] | None = None
        for feature, x in observed:
            if feature.ring.count >= cfg.learning_rows:
                if refit or not feature.distances:
                    feature.fit(cfg.scale_floor)
                surprise = feature.surprise(x)
                if best is None or surprise > best[0]:
                    best = (surprise, feature, x)
            feature.ring.push(x)
        if best is None:
            return 0.0, LEARNING
        surprise = max(0.0, best[0] - self._bonferroni)
        feature, x = best[1], best[2]
        held = self._hold > 0
        if held:
            self._hold -= 1
            score = 0.0
        else:
            score = surprise / (surprise + cfg.alarm_surprise)
            if surprise >= cfg.alarm_surprise:
                self._hold = cfg.hold_rows
        return score, Explanation(feature.name, x, feature.center, feature.spread,
                                  (x - feature.center) / feature.spread, surprise, held)

    def _observe(self, timestamp: datetime, value: float) -> list[tuple[_Feature, float]]:
        """Each feature with its value at this row; updates the short windows and the rhythm slots."""
        cfg = self.config
        self._recent.append(value)
        observed = _window_means(self._recent, cfg.windows, self._features)
        if self._previous is not None:
            self._changes.append(abs(value - self._previous))
            observed += _window_means(self._changes, cfg.volatility, self._volatility)
        self._previous = value
        slot = _seconds_of_day(timestamp) // cfg.rhythm_slot_seconds
        past = self._slots.get(slot)
        if past is None:
            past = self._slots[slot] = deque(maxlen=cfg.rhythm_depth)
        if len(past) >= 3:
            usual = sorted(past)[len(past) // 2]
            observed.append((self._rhythm, value - usual))
        past.append(value)
        return observed

    def state(self) -> dict[str, Any]:
        """Everything the detector has learnt, as JSON-able numbers and lists (no pickle)."""
        return {
            "version": STATE_VERSION,
            "config": asdict(self.config),
            "rows": self._rows,
            "hold": self._hold,
            "previous": self._previous,
            "recent": list(self._recent),
            "changes": list(self._changes),
            "slots": {str(slot): list(values) for slot, values in self._slots.items()},
            "features": {f.name: f.state() for f in (*self._features, *self._volatility, self._rhythm)},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Detector:
        """A detector that continues exactly where the one that gave `state` stopped."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"detector state version {state.get('version')!r}, expected {STATE_VERSION}")
        raw = dict(state["config"])
        config = DetectorConfig(**{**raw, "windows": tuple(raw["windows"]),
                                   "volatility": tuple(raw["volatility"])})
        detector = cls(config)
        detector._rows, detector._hold = int(state["rows"]), int(state["hold"])
        previous = state["previous"]
        detector._previous = None if previous is None else float(previous)
        detector._recent.extend(float(x) for x in state["recent"])
        detector._changes.extend(float(x) for x in state["changes"])
        for slot, values in state["slots"].items():
            detector._slots[int(slot)] = deque((float(x) for x in values), maxlen=config.rhythm_depth)
        for feature in (*detector._features, *detector._volatility, detector._rhythm):
            feature.restore(state["features"][feature.name])
        return detector
