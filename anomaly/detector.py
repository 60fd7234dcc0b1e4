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

A personal baseline (anomaly/baseline.py) is this detector trained on a citizen's own history and
then frozen: `freeze` fits every feature on all it has seen, `peek` scores a new value (after the
values that came since training, for the short windows) without learning from it, and the frozen
state leaves out the feature histories, which only further learning would need.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_LOG10 = math.log(10.0)
_MAD_TO_SIGMA = 1.4826
STATE_VERSION = 2
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
    learning_rows: int = 20
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
    # The values' smallest step, when known (a home device shows SpO2 in whole percent): no
    # spread or tail is narrower, so that a series that read 97 every day does not call 96
    # ten million spreads away. 0: unknown (NAB).
    resolution: float = 0.0

    def __post_init__(self) -> None:
        for name in ("windows", "volatility"):
            widths = getattr(self, name)
            if not widths or list(widths) != sorted(set(widths)) or widths[0] < 1:
                raise ValueError(f"{name} must be increasing positive widths, got {widths}")
        if not 2 <= self.learning_rows <= self.history:
            raise ValueError("learning_rows must be between 2 and history")
        if self.refit_every < 1 or self.rhythm_slot_seconds < 1 or self.rhythm_depth < 3:
            raise ValueError("refit_every and rhythm_slot_seconds must be positive, rhythm_depth at least 3")
        if self.alarm_surprise <= 0 or self.hold_rows < 0 or self.scale_floor < 0 or self.resolution < 0:
            raise ValueError("alarm_surprise must be positive, hold_rows, scale_floor and resolution "
                             "not negative")


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

    def release(self) -> None:
        """Give the buffer back (a frozen detector learns no more); the count stays."""
        self.buf = np.zeros(0)

    def held(self) -> list[float]:
        """The values held, in buffer order (a sum's last bit depends on it): what the state
        keeps rather than the whole, mostly empty, buffer."""
        values: list[float] = self.buf[:self.count].tolist()
        return values

    def refill(self, values: list[float], pos: int) -> None:
        if len(values) > len(self.buf) or not 0 <= pos < len(self.buf):
            raise ValueError(f"{len(values)} values at {pos} for a history of {len(self.buf)}")
        self.buf = np.zeros(len(self.buf))
        self.buf[:len(values)] = values
        self.count, self.pos = len(values), pos


class _Feature:
    """The recent distribution of one feature, with an exponential tail beyond its largest distance."""

    def __init__(self, name: str, history: int) -> None:
        self.name = name
        self.ring = _Ring(history)
        self.center = 0.0
        self.spread = 0.0
        # Sorted |x - center| of the ring at the last fit: a list while learning (bisect on a
        # list is the fastest), an array of doubles once frozen (a quarter of a list's memory:
        # the engine keeps citizens' baselines in memory).
        self.distances: list[float] | array[float] = []
        self.tail_scale = 1.0

    def fit(self, scale_floor: float, resolution: float = 0.0) -> None:
        past = self.ring.values()
        self.center = center = float(np.median(past))
        distances = np.sort(np.abs(past - center))
        n = len(distances)
        self.distances = distances.tolist()
        q90 = float(distances[int(0.9 * (n - 1))])
        top = distances[distances > q90]
        # The mean excess over the 90th percentile is the exponential tail's scale (its MLE).
        excess = float(top.mean()) - q90 if len(top) else 0.0
        floor = max(scale_floor * float(past.std()), 1e-9 * max(1.0, abs(center)), resolution)
        self.tail_scale = max(excess, floor)
        self.spread = max(float(distances[n // 2]) * _MAD_TO_SIGMA, floor)

    def freeze(self) -> None:
        """Keep the fit compactly and let the history go: no more learning."""
        self.distances = array("d", self.distances)
        self.ring.release()

    def surprise(self, x: float) -> float:
        """-log10 of the probability of a distance from the center at least as large as x's."""
        distance = abs(x - self.center)
        n = len(self.distances)
        at_least = n - bisect_left(self.distances, distance)
        if at_least > 0:
            return -math.log10((at_least + 0.5) / (n + 1))
        beyond = (distance - self.distances[-1]) / self.tail_scale
        return -math.log10(0.5 / (n + 1)) + beyond / _LOG10

    def state(self, with_history: bool = True) -> dict[str, Any]:
        return {"history": self.ring.held() if with_history else None, "pos": self.ring.pos,
                "seen": self.ring.count, "center": self.center, "spread": self.spread,
                "distances": list(self.distances), "tail_scale": self.tail_scale}

    def restore(self, state: dict[str, Any]) -> None:
        self.center, self.spread = float(state["center"]), float(state["spread"])
        self.distances = [float(d) for d in state["distances"]]
        self.tail_scale = float(state["tail_scale"])
        history = state["history"]
        if history is None:
            self.freeze()
        else:
            self.ring.refill([float(x) for x in history], int(state["pos"]))
        self.ring.count = int(state["seen"])


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


class _Windows:
    """The short memory features are computed from: the last values, the last changes, the
    previous value and each time-of-day slot's recent values. `peek` works on a copy."""

    def __init__(self, cfg: DetectorConfig) -> None:
        self.recent: deque[float] = deque(maxlen=max(cfg.windows))
        self.changes: deque[float] = deque(maxlen=max(cfg.volatility))
        self.slots: dict[int, deque[float]] = {}
        self.previous: float | None = None

    def copy(self) -> _Windows:
        other = _Windows.__new__(_Windows)
        other.recent, other.changes = self.recent.copy(), self.changes.copy()
        other.slots, other.previous = dict(self.slots), self.previous
        return other

    def observe(self, timestamp: datetime, value: float, cfg: DetectorConfig,
                features: Detector, *, owned_slots: bool = True) -> list[tuple[_Feature, float]]:
        """Each feature with its value at this row; then remember the row. `owned_slots` False:
        a slot's deque is copied before it changes (the copy shares the original's)."""
        self.recent.append(value)
        observed = _window_means(self.recent, cfg.windows, features._features)
        if self.previous is not None:
            self.changes.append(abs(value - self.previous))
            observed += _window_means(self.changes, cfg.volatility, features._volatility)
        self.previous = value
        slot = _seconds_of_day(timestamp) // cfg.rhythm_slot_seconds
        past = self.slots.get(slot)
        if past is None:
            past = deque(maxlen=cfg.rhythm_depth)
        elif not owned_slots:
            past = past.copy()
        self.slots[slot] = past
        if len(past) >= 3:
            usual = sorted(past)[len(past) // 2]
            observed.append((features._rhythm, value - usual))
        past.append(value)
        return observed


def _checked(value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"value {value!r} is not a finite number")
    if abs(value) > MAX_MAGNITUDE:
        raise ValueError(f"value {value!r} is beyond the detector's range (±{MAX_MAGNITUDE:g})")


class Detector:
    """The streaming detector of one series: `update` each value in time order."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = cfg = config or DetectorConfig()
        self._features = [_Feature("value" if w == 1 else f"mean_{w}", cfg.history) for w in cfg.windows]
        self._volatility = [_Feature(f"volatility_{w}", cfg.history) for w in cfg.volatility]
        self._rhythm = _Feature("rhythm", cfg.history)
        self._bonferroni = math.log10(len(cfg.windows) + len(cfg.volatility) + 1)
        self._windows = _Windows(cfg)
        self._rows = 0
        self._hold = 0
        # Frozen: fitted once on everything seen and restored without the feature histories;
        # it can peek but no longer learn.
        self.frozen = False

    @property
    def rows(self) -> int:
        return self._rows

    def fitted_distances(self) -> int:
        """How many distances the features hold (what a frozen detector's memory grows with)."""
        return sum(len(feature.distances) for feature in self._all_features())

    def _all_features(self) -> tuple[_Feature, ...]:
        return (*self._features, *self._volatility, self._rhythm)

    def update(self, timestamp: datetime, value: float) -> tuple[float, Explanation]:
        """The score of this value given the series so far, then learn from it."""
        _checked(value)
        if self.frozen:
            raise ValueError("a frozen detector scores (peek) but does not learn")
        cfg = self.config
        self._rows += 1
        observed = self._windows.observe(timestamp, value, cfg, self)
        refit = self._rows % cfg.refit_every == 0
        best: tuple[float, _Feature, float] | None = None
        for feature, x in observed:
            if feature.ring.count >= cfg.learning_rows:
                if refit or not feature.distances:
                    feature.fit(cfg.scale_floor, cfg.resolution)
                surprise = feature.surprise(x)
                if best is None or surprise > best[0]:
                    best = (surprise, feature, x)
            feature.ring.push(x)
        if best is None:
            return 0.0, LEARNING
        surprise = max(0.0, best[0] - self._bonferroni)
        held = self._hold > 0
        if held:
            self._hold -= 1
            score = 0.0
        else:
            score = self._score(surprise)
            if surprise >= cfg.alarm_surprise:
                self._hold = cfg.hold_rows
        return score, self._explain(best[1], best[2], surprise, held)

    def freeze(self) -> None:
        """Fit every feature that has learnt enough on all it has seen, and stop learning."""
        for feature in self._all_features():
            if feature.ring.count >= self.config.learning_rows:
                feature.fit(self.config.scale_floor, self.config.resolution)
            feature.freeze()
        self.frozen = True

    def peek(self, timestamp: datetime, value: float,
             since: Iterable[tuple[datetime, float]] = (),
             features: Collection[str] | None = None) -> tuple[float, Explanation]:
        """The score of `value` at `timestamp` against the fitted distributions, as if the values
        `since` (oldest first, after those learnt) had come before it; learns nothing and holds
        nothing (one excursion, one alert is the alert lifecycle's business here). `features`:
        only these compete (the correction for the number tried stays that of all of them)."""
        _checked(value)
        windows = self._windows.copy()
        for at, earlier in since:
            _checked(earlier)
            windows.observe(at, earlier, self.config, self, owned_slots=False)
        best: tuple[float, _Feature, float] | None = None
        for feature, x in windows.observe(timestamp, value, self.config, self, owned_slots=False):
            if feature.distances and (features is None or feature.name in features):
                surprise = feature.surprise(x)
                if best is None or surprise > best[0]:
                    best = (surprise, feature, x)
        if best is None:
            return 0.0, LEARNING
        surprise = max(0.0, best[0] - self._bonferroni)
        return self._score(surprise), self._explain(best[1], best[2], surprise, False)

    def usual(self) -> tuple[float, float]:
        """The value feature's center and spread at its last fit."""
        value = self._features[0]
        return value.center, value.spread

    def _score(self, surprise: float) -> float:
        return surprise / (surprise + self.config.alarm_surprise)

    @staticmethod
    def _explain(feature: _Feature, x: float, surprise: float, held: bool) -> Explanation:
        return Explanation(feature.name, x, feature.center, feature.spread,
                           (x - feature.center) / feature.spread, surprise, held)

    def state(self) -> dict[str, Any]:
        """Everything the detector has learnt, as JSON-able numbers and lists (no pickle); a
        frozen detector's without the feature histories."""
        windows = self._windows
        return {
            "version": STATE_VERSION,
            "config": asdict(self.config),
            "rows": self._rows,
            "hold": self._hold,
            "frozen": self.frozen,
            "previous": windows.previous,
            "recent": list(windows.recent),
            "changes": list(windows.changes),
            "slots": {str(slot): list(values) for slot, values in windows.slots.items()},
            "features": {f.name: f.state(with_history=not self.frozen) for f in self._all_features()},
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
        detector.frozen = bool(state["frozen"])
        windows = detector._windows
        previous = state["previous"]
        windows.previous = None if previous is None else float(previous)
        windows.recent.extend(float(x) for x in state["recent"])
        windows.changes.extend(float(x) for x in state["changes"])
        for slot, values in state["slots"].items():
            windows.slots[int(slot)] = deque((float(x) for x in values), maxlen=config.rhythm_depth)
        for feature in detector._all_features():
            feature.restore(state["features"][feature.name])
        return detector
