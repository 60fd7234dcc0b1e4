"""The NAB scoring rules as pure functions of anomaly scores and labelled windows.

A detector gives every row a score in [0, 1]; one threshold over the whole corpus turns scores into
detections (score >= threshold). Each row has a weight that a detection there would earn: inside a
window a reward that falls from +TP at the window's start towards 0 at its end, outside a penalty of
up to the FP weight that grows with the distance past the previous window. A window counts only its
first detection (the largest reward, as the reward falls through the window) and costs the FN weight
when it has none. The first rows of each file are probation: a detector is still learning there.

The threshold search turns every row into an event "lowering the threshold to my score adds this
much": a false positive adds its (negative) weight, a window row adds how much it raises its window's
best reward so far. Sorting the events by score once and summing them gives the corpus score at every
candidate threshold together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PROBATION_SHARE = 0.15
PROBATION_MAX_ROWS = 750
# Above every valid score: the threshold of a detector that never fires.
NO_DETECTION = 1.1
# Past three window widths after a window a false positive costs the full FP weight.
FAR_PAST_WINDOW = 3.0


@dataclass(frozen=True)
class Profile:
    """The weights of one NAB application profile."""

    name: str
    tp: float
    fn: float
    fp: float


PROFILES = (
    Profile("standard", tp=1.0, fn=1.0, fp=0.11),
    Profile("reward_low_FP_rate", tp=1.0, fn=1.0, fp=0.22),
    Profile("reward_low_FN_rate", tp=1.0, fn=2.0, fp=0.11),
)


@dataclass(frozen=True)
class Series:
    """One scored file: a score per row and its windows as inclusive row ranges, in time order."""

    name: str
    scores: FloatArray
    windows: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        previous_end = -1
        for start, end in self.windows:
            if not previous_end < start < end < len(self.scores):
                # A one-row window would divide by zero in the FP distance; overlapping windows
                # have no defined "previous window".
                raise ValueError(f"{self.name}: windows must be ordered, disjoint, at least two rows "
                                 f"long and inside the file (got rows {start}..{end})")
            previous_end = end


@dataclass(frozen=True)
class ProfileResult:
    """A corpus scored under one profile with its optimised threshold."""

    profile: Profile
    threshold: float
    raw: float
    null: float
    perfect: float

    @property
    def normalised(self) -> float:
        """100 for a perfect detector, 0 for one that never fires."""
        return normalise(self.raw, self.null, self.perfect)


def probation_length(rows: int) -> int:
    """Rows at the start of a file that are not scored: 15% of the file, at most 750 rows."""
    return min(math.floor(PROBATION_SHARE * rows), PROBATION_MAX_ROWS)


def scaled_sigmoid(position: FloatArray) -> FloatArray:
    """2·sigmoid(−5x) − 1, and −1 beyond three widths: +0.987 at x = −1, 0 at x = 0, → −1 after.

    Written as −tanh(2.5x), the same function, so that no exponential overflows."""
    return np.where(position > FAR_PAST_WINDOW, -1.0, -np.tanh(2.5 * np.minimum(position, FAR_PAST_WINDOW)))


def window_reward(rows: IntArray, start: int, end: int, profile: Profile) -> FloatArray:
    """What a detection at each row of the window earns: TP weight at its start, near 0 at its end.

    The position runs from −1 at the first row to −1/width at the last one (never 0), and the reward
    is scaled so that the first row earns exactly the TP weight."""
    width = end - start + 1
    position = -(end - rows + 1) / width
    best = float(scaled_sigmoid(np.array([-1.0]))[0])
    reward: FloatArray = scaled_sigmoid(position) * (profile.tp / best)
    return reward


def row_weights(series: Series, profile: Profile) -> FloatArray:
    """What a detection at each row would add to the score, ignoring the first-detection rule."""
    rows = np.arange(len(series.scores), dtype=np.int64)
    # Before the first window a false positive is as far from any window as can be.
    weights = np.full(len(rows), -profile.fp)
    for k, (start, end) in enumerate(series.windows):
        weights[start:end + 1] = window_reward(rows[start:end + 1], start, end, profile)
        next_start = series.windows[k + 1][0] if k + 1 < len(series.windows) else len(rows)
        after = rows[end + 1:next_start]
        # The distance is measured in widths of the window just left, so a long window forgives
        # a late alarm for longer.
        distance = (after - end) / (end - start)
        weights[end + 1:next_start] = scaled_sigmoid(distance) * profile.fp
    return weights


def window_of_rows(series: Series) -> IntArray:
    """The index of the window each row lies in, −1 outside every window."""
    window = np.full(len(series.scores), -1, dtype=np.int64)
    for k, (start, end) in enumerate(series.windows):
        window[start:end + 1] = k
    return window


def scorable_windows(series: Series) -> int:
    """Windows with at least one row after probation: only these can be missed."""
    first = probation_length(len(series.scores))
    return sum(1 for _start, end in series.windows if end >= first)


def file_score(series: Series, profile: Profile, threshold: float) -> float:
    """The file's score at a threshold, evaluated row by row as the rules read.

    The sweep gets the same number by another route; this one is what reports use."""
    first = probation_length(len(series.scores))
    weights = row_weights(series, profile)
    window = window_of_rows(series)
    detected = series.scores >= threshold
    detected[:first] = False
    total = float(weights[detected & (window < 0)].sum())
    for start, end in series.windows:
        if end < first:
            continue
        hits = np.flatnonzero(detected[start:end + 1])
        total += float(weights[start + hits[0]]) if len(hits) else -profile.fn
    return total


def sweep_events(series: Series, profile: Profile) -> tuple[FloatArray, FloatArray]:
    """(score, gain) per scorable row: how much lowering the threshold to the row's score adds.

    A false positive adds its weight. A window row adds how much it raises the best reward among
    its window's rows at or above its score (starting from the missed window's −FN), so the gains
    of a window's rows above a threshold sum to the reward of its earliest detection there."""
    first = probation_length(len(series.scores))
    scores = series.scores[first:]
    weights = row_weights(series, profile)[first:]
    window = window_of_rows(series)[first:]
    outside = window < 0
    event_scores = [scores[outside]]
    gains = [weights[outside]]
    for k in range(len(series.windows)):
        inside = np.flatnonzero(window == k)
        if not len(inside):
            continue
        # Descending by score; ties can go in any order, as a threshold takes all tied rows at once.
        order = inside[np.argsort(-scores[inside], kind="stable")]
        best = np.maximum.accumulate(np.concatenate(([-profile.fn], weights[order])))
        event_scores.append(scores[order])
        gains.append(np.diff(best))
    return np.concatenate(event_scores), np.concatenate(gains)


def sweep(corpus: Sequence[Series], profile: Profile) -> tuple[FloatArray, FloatArray]:
    """(thresholds, scores): the corpus score at every candidate threshold, highest threshold first.

    The candidates are no detection at all and every distinct score of a scorable row, as a
    threshold between two scores detects the same rows as the higher one."""
    parts = [sweep_events(series, profile) for series in corpus]
    scores = np.concatenate([p[0] for p in parts])
    gains = np.concatenate([p[1] for p in parts])
    missed_all = -profile.fn * sum(scorable_windows(series) for series in corpus)
    order = np.argsort(-scores, kind="stable")
    scores, running = scores[order], missed_all + np.cumsum(gains[order])
    # The last event of each group of equal scores has the total with the whole group detected.
    group_ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    thresholds = np.concatenate(([NO_DETECTION], scores[group_ends]))
    totals = np.concatenate(([missed_all], running[group_ends]))
    return thresholds, totals


def best_threshold(corpus: Sequence[Series], profile: Profile) -> float:
    """The threshold with the highest corpus score; on a tie the highest such threshold."""
    thresholds, totals = sweep(corpus, profile)
    return float(thresholds[int(np.argmax(totals))])


def normalise(raw: float, null: float, perfect: float) -> float:
    """100 · (S − S_null) / (S_perfect − S_null): the null detector scores 0, the perfect one 100."""
    return 100.0 * (raw - null) / (perfect - null)


def score_corpus(corpus: Sequence[Series], profile: Profile) -> ProfileResult:
    """Optimise the threshold on the corpus, score every file with it and sum.

    The null detector misses every scorable window; the perfect one catches every labelled window
    at its first row."""
    threshold = best_threshold(corpus, profile)
    raw = sum(file_score(series, profile, threshold) for series in corpus)
    null = -profile.fn * sum(scorable_windows(series) for series in corpus)
    perfect = profile.tp * sum(len(series.windows) for series in corpus)
    return ProfileResult(profile, threshold, raw, null, perfect)
