"""Personal baselines: learning until the learning period is over, a stored baseline reloads to
identical scores, and what is excluded is left out."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly.baseline import ACTIVE, LEARNING, Baseline, BaselineConfig, train

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def daily(days: int, level: float = 80.0) -> list[tuple[datetime, float]]:
    return [(NOW - timedelta(days=days - i), level + math.sin(i * 1.7) * 0.4) for i in range(days)]


def test_a_series_learns_until_its_learning_period_is_over_and_has_enough_rows() -> None:
    assert train("body_weight", daily(13), [], NOW).status == LEARNING  # 13 days watched
    assert train("body_weight", daily(19), [], NOW).status == LEARNING  # 19 rows: too few
    active = train("body_weight", daily(25), [], NOW)
    assert active.status == ACTIVE and active.rows == 25
    assert active.score(NOW, 80.0) is not None
    assert train("body_weight", daily(13), [], NOW).score(NOW, 99.0) is None


def test_points_outside_the_training_window_or_inside_an_excluded_period_are_left_out() -> None:
    points = daily(90)
    config = BaselineConfig(training_window=timedelta(days=60))
    excluded = [(NOW - timedelta(days=10), NOW - timedelta(days=5)), (NOW - timedelta(days=2), None)]
    baseline = train("body_weight", points, excluded, NOW, config)
    assert baseline.rows + baseline.excluded == 60
    assert baseline.excluded == 5 + 2
    assert baseline.trained_through == points[-3][0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(60.0, 100.0), min_size=25, max_size=120),
       st.lists(st.floats(40.0, 140.0), min_size=1, max_size=8))
def test_a_stored_baseline_reloads_to_identical_scores(history: list[float], later: list[float]) -> None:
    start = NOW - timedelta(days=len(history))
    points = [(start + timedelta(days=i, hours=i % 3), x) for i, x in enumerate(history)]
    baseline = train("body_weight", points, [], NOW)
    assert baseline.status == ACTIVE
    stored = json.loads(json.dumps(baseline.state, allow_nan=False))
    restored = Baseline.restored(stored, series=baseline.series, trained_at=baseline.trained_at,
                                 rows=baseline.rows, excluded=baseline.excluded,
                                 first_at=baseline.first_at, trained_through=baseline.trained_through,
                                 learning_until=baseline.learning_until)
    since = [(NOW + timedelta(hours=6 * i), x) for i, x in enumerate(later[:-1])]
    at = NOW + timedelta(hours=6 * len(later))
    assert restored.score(at, later[-1], since) == baseline.score(at, later[-1], since)


def test_training_streams_at_most_the_detectors_history() -> None:
    config = BaselineConfig()
    many = [(NOW - timedelta(minutes=3000 - i), 80.0 + math.sin(i)) for i in range(3000)]
    baseline = train("pulse_rate", many, [], NOW, config)
    assert baseline.rows == config.detector.history
    assert baseline.first_at == many[0][0] and baseline.excluded == 0
