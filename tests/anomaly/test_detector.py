"""The streaming detector: causal, bounded, and a stored state continues with identical scores."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly.detector import (
    LEARNING,
    MAX_MAGNITUDE,
    STATE_VERSION,
    Detector,
    DetectorConfig,
    Explanation,
)
from anomaly.nab.detect import DataRow, score_rows

START = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
# Small enough that hypothesis's series fill and wrap the histories, refit often and hold.
SMALL = DetectorConfig(history=40, refit_every=3, learning_rows=8, windows=(1, 3), volatility=(2, 5),
                       rhythm_slot_seconds=3600, rhythm_depth=4, hold_rows=5)
CONFIGS = st.sampled_from([SMALL, DetectorConfig()])

# Mostly noise, sometimes a spike (so that detections and holds happen), and repeated values (flat
# stretches and ties).
values = st.one_of(
    st.tuples(st.floats(-1.0, 1.0), st.integers(0, 15)).map(lambda p: p[0] * (1e4 if p[1] == 0 else 1)),
    st.sampled_from([0.0, 1.0]),
    st.floats(-1e6, 1e6),
    st.floats(-MAX_MAGNITUDE, MAX_MAGNITUDE),
)
series = st.tuples(st.lists(values, min_size=30, max_size=300), st.integers(1, 7200))


def run(config: DetectorConfig, points: list[float], step: int,
        detector: Detector | None = None, first: int = 0) -> list[tuple[float, Explanation]]:
    detector = detector or Detector(config)
    return [detector.update(START + timedelta(seconds=step * (first + i)), x) for i, x in enumerate(points)]


@settings(max_examples=60, deadline=None)
@given(CONFIGS, series, st.lists(values, min_size=1, max_size=100))
def test_appending_future_points_never_changes_past_scores(
        config: DetectorConfig, history: tuple[list[float], int], future: list[float]) -> None:
    points, step = history
    assert run(config, points + future, step)[:len(points)] == run(config, points, step)


@settings(max_examples=30, deadline=None)
@given(series, st.lists(values, min_size=1, max_size=100))
def test_a_files_scores_do_not_change_when_rows_are_appended_to_it(
        history: tuple[list[float], int], future: list[float]) -> None:
    # `telecare nab detect`'s whole-file path: no normalisation or pass over the file.
    points, step = history

    def rows(xs: list[float]) -> list[DataRow]:
        return [DataRow("", repr(x), START + timedelta(seconds=step * i), x) for i, x in enumerate(xs)]
    assert score_rows(rows(points + future), SMALL)[:len(points)] == score_rows(rows(points), SMALL)


@settings(max_examples=60, deadline=None)
@given(CONFIGS, series)
def test_scores_are_within_zero_and_one(config: DetectorConfig, history: tuple[list[float], int]) -> None:
    points, step = history
    for score, why in run(config, points, step):
        assert 0.0 <= score <= 1.0
        assert math.isfinite(why.surprise) and why.surprise >= 0.0


@settings(max_examples=60, deadline=None)
@given(CONFIGS, series, st.data())
def test_a_state_stored_as_json_continues_with_identical_scores(
        config: DetectorConfig, history: tuple[list[float], int], data: st.DataObject) -> None:
    points, step = history
    # Stored and reloaded before each of these rows (every row with the small configuration).
    everywhere = set(range(len(points)))
    splits = everywhere if config == SMALL else data.draw(st.sets(st.sampled_from(sorted(everywhere)),
                                                                  max_size=5))
    detector = Detector(config)
    resumed = []
    for i, x in enumerate(points):
        if i in splits:
            detector = Detector.from_state(json.loads(json.dumps(detector.state(), allow_nan=False)))
        resumed.append(detector.update(START + timedelta(seconds=step * i), x))
    assert resumed == run(config, points, step)


def noisy(n: int) -> list[float]:
    """A deterministic, irregular series around 10 (no randomness in the test)."""
    return [10.0 + math.sin(i * 1.7) + 0.5 * math.sin(i * 0.31) for i in range(n)]


def test_learns_first_then_flags_a_spike_once_and_says_why() -> None:
    scored = run(DetectorConfig(), [*noisy(600), 30.0, 30.0, *noisy(20)], 300)
    assert scored[0] == (0.0, LEARNING)
    assert max(score for score, _ in scored[200:600]) < 0.5
    score, why = scored[600]
    assert score > 0.5
    # The jump is both a value far above the usual and a change far larger than usual.
    assert why.feature in {"value", "volatility_4"} and why.deviation > 5 and not why.held
    assert why.deviation == (why.observed - why.baseline) / why.spread
    assert why.surprise > DetectorConfig().alarm_surprise
    # The next rows are held: one alarm per excursion, however surprising the row after it is.
    assert scored[601][0] == 0.0 and scored[601][1].held


def test_a_state_stored_during_a_hold_continues_it() -> None:
    points = [*noisy(600), 30.0, *noisy(50)]
    detector = Detector()
    run(detector.config, points[:601], 300, detector)
    assert detector.state()["hold"] > 0
    resumed = run(detector.config, points[601:], 300, Detector.from_state(json.loads(json.dumps(
        detector.state()))), first=601)
    assert resumed == run(DetectorConfig(), points, 300)[601:]


def test_a_stored_state_names_its_version_and_refuses_another() -> None:
    detector = Detector()
    run(detector.config, noisy(100), 60, detector)
    state = detector.state()
    assert state["version"] == STATE_VERSION
    with pytest.raises(ValueError, match="version"):
        Detector.from_state({**state, "version": 99})


def test_a_value_that_is_not_finite_or_beyond_range_is_refused() -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        Detector().update(START, math.nan)
    with pytest.raises(ValueError, match="beyond the detector's range"):
        Detector().update(START, -1e101)


def test_a_configuration_without_increasing_windows_is_refused() -> None:
    with pytest.raises(ValueError, match="windows"):
        DetectorConfig(windows=(4, 1))


@settings(max_examples=60, deadline=None)
@given(CONFIGS, series, st.lists(values, min_size=1, max_size=20))
def test_peeking_learns_nothing_and_a_frozen_state_peeks_alike(
        config: DetectorConfig, history: tuple[list[float], int], later: list[float]) -> None:
    points, step = history
    detector = Detector(config)
    run(config, points, step, detector)
    detector.freeze()
    before = json.dumps(detector.state())
    since = [(START + timedelta(seconds=step * (len(points) + i)), x) for i, x in enumerate(later[:-1])]
    at = START + timedelta(seconds=step * (len(points) + len(later)))
    peeked = detector.peek(at, later[-1], since)
    assert json.dumps(detector.state()) == before
    assert detector.peek(at, later[-1], since) == peeked
    restored = Detector.from_state(json.loads(json.dumps(detector.state(), allow_nan=False)))
    assert restored.peek(at, later[-1], since) == peeked
    assert 0.0 <= peeked[0] <= 1.0


def test_a_frozen_detector_refuses_to_learn_and_keeps_no_feature_histories() -> None:
    detector = Detector()
    run(detector.config, noisy(300), 60, detector)
    detector.freeze()
    state = detector.state()
    assert all(feature["history"] is None for feature in state["features"].values())
    with pytest.raises(ValueError, match="frozen"):
        detector.update(START, 10.0)


def test_a_peek_sees_the_values_that_came_since_training() -> None:
    """A level shift that began after training: the mean of the last 4 values only knows it
    through `since`."""
    detector = Detector()
    run(detector.config, noisy(300), 3600, detector)
    detector.freeze()
    after = START + timedelta(hours=300)
    shifted = [(after + timedelta(hours=i), 12.5) for i in range(3)]
    alone, _ = detector.peek(after + timedelta(hours=3), 12.5)
    score, why = detector.peek(after + timedelta(hours=3), 12.5, shifted)
    assert score >= 0.5 and why.feature == "mean_4"
    assert alone < score
