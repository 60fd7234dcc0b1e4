"""The NAB rules on small hand-made series: one window, single detections at chosen rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly.nab.scoring import (
    NO_DETECTION,
    PROFILES,
    Profile,
    Series,
    file_score,
    normalise,
    probation_length,
    scaled_sigmoid,
    score_corpus,
    sweep,
)

STANDARD, LOW_FP, LOW_FN = PROFILES
ROWS = 1000  # probation: rows 0..149
WINDOW = (400, 499)  # 100 rows
EDGE = math.tanh(2.5)  # the sigmoid's value at a window's first row, scaled to the TP weight there


def detections(*rows: int, windows: tuple[tuple[int, int], ...] = (WINDOW,), length: int = ROWS) -> Series:
    scores = np.zeros(length)
    scores[list(rows)] = 1.0
    return Series("hand-made.csv", scores, windows)


@pytest.mark.parametrize(("case", "rows", "profile", "expected"), [
    ("detection at the window's first row earns the TP weight", (400,), STANDARD, 1.0),
    ("detection at the window's last row earns almost nothing", (499,), STANDARD,
     math.tanh(2.5 / 100) / EDGE),
    ("halfway into the window", (450,), STANDARD, math.tanh(2.5 * 50 / 100) / EDGE),
    ("only the first detection in a window counts", (430, 400, 401, 499), STANDARD, 1.0),
    ("a later detection in the window adds nothing to an earlier one", (420, 480), STANDARD,
     math.tanh(2.5 * 80 / 100) / EDGE),
    ("a missed window costs the FN weight", (), STANDARD, -1.0),
    ("a missed window costs the FN weight of the profile", (), LOW_FN, -2.0),
    ("an FP before the first window costs the full FP weight", (200,), STANDARD, -1.0 - 0.11),
    ("an FP right after the window costs a little", (500,), STANDARD,
     -1.0 - 0.11 * math.tanh(2.5 * 1 / 99)),
    ("an FP one window width after it costs most of the weight", (598,), STANDARD,
     -1.0 - 0.11 * math.tanh(2.5)),
    ("an FP more than three widths after it costs the full weight", (900,), STANDARD, -1.0 - 0.11),
    ("the FP weight of the profile", (900,), LOW_FP, -1.0 - 0.22),
    ("every flagged row outside the window costs again", (900, 901, 902), STANDARD, -1.0 - 3 * 0.11),
    ("a detection in probation is ignored", (100,), STANDARD, -1.0),
    ("the last probation row is ignored, the first scored row counts", (149, 150), STANDARD,
     -1.0 - 0.11),
])
def test_rule(case: str, rows: tuple[int, ...], profile: Profile, expected: float) -> None:
    assert file_score(detections(*rows), profile, 1.0) == pytest.approx(expected), case


def test_end_of_window_scores_about_zero_and_falls_towards_it() -> None:
    rewards = [file_score(detections(row), STANDARD, 1.0) for row in range(400, 500)]
    assert rewards[0] == pytest.approx(1.0)
    assert rewards[-1] == pytest.approx(0.0, abs=0.03)
    assert all(a > b for a, b in zip(rewards, rewards[1:], strict=False))


def test_false_positive_costs_more_the_further_after_a_window() -> None:
    costs = [-file_score(detections(row), STANDARD, 1.0) - 1.0 for row in range(500, 1000)]
    assert 0 < costs[0] < costs[100] < costs[200] < costs[-1] == pytest.approx(0.11)


def test_a_window_in_probation_is_neither_missed_nor_counted_as_missed() -> None:
    series = detections(windows=((10, 20), WINDOW))
    assert file_score(series, STANDARD, 1.0) == pytest.approx(-1.0)


@pytest.mark.parametrize(("rows", "length"), [(100, 15), (1000, 150), (4999, 749), (5000, 750),
                                              (22695, 750), (7, 1)])
def test_probation_is_15_percent_at_most_750_rows(rows: int, length: int) -> None:
    assert probation_length(rows) == length


def test_scaled_sigmoid_at_its_landmarks() -> None:
    values = scaled_sigmoid(np.array([-1.0, -0.5, 0.0, 1.0, 3.0, 3.01, 1e9]))
    expected = [0.98661, 0.84828, 0.0, -0.98661, -math.tanh(7.5), -1.0, -1.0]
    assert values == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_null_and_perfect_detectors_normalise_to_0_and_100(profile: Profile) -> None:
    windows = ((400, 499), (700, 799))
    perfect = [detections(400, 700, windows=windows), detections(400, windows=(WINDOW,))]
    null = [detections(windows=windows), detections(windows=(WINDOW,))]
    assert score_corpus(perfect, profile).normalised == pytest.approx(100.0)
    assert score_corpus(null, profile).normalised == pytest.approx(0.0)
    assert score_corpus(null, profile).threshold == NO_DETECTION


def test_normalise() -> None:
    assert normalise(-53.0, -53.0, 53.0) == 0.0
    assert normalise(53.0, -53.0, 53.0) == 100.0
    assert normalise(0.0, -106.0, 53.0) == pytest.approx(100 * 106 / 159)


def test_the_threshold_counts_scores_at_or_above_it() -> None:
    series = Series("s.csv", np.r_[np.zeros(400), [0.7], np.zeros(599)], (WINDOW,))
    assert file_score(series, STANDARD, 0.7) == pytest.approx(1.0)
    assert file_score(series, STANDARD, 0.7000001) == pytest.approx(-1.0)
    assert score_corpus([series], STANDARD).threshold == 0.7


@st.composite
def small_series(draw: st.DrawFn) -> Series:
    length = draw(st.integers(12, 60))
    scores = draw(st.lists(st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]), min_size=length, max_size=length))
    edges = sorted(draw(st.sets(st.integers(0, length - 1), max_size=6)))
    windows = tuple((a, b) for a, b in zip(edges[::2], edges[1::2], strict=False) if b > a)
    return Series("random.csv", np.array(scores), windows)


@settings(max_examples=60, deadline=None)
@given(corpus=st.lists(small_series(), min_size=1, max_size=3), profile=st.sampled_from(PROFILES))
def test_sweep_agrees_with_scoring_each_threshold_row_by_row(corpus: list[Series], profile: Profile) -> None:
    thresholds, totals = sweep(corpus, profile)
    assert list(thresholds) == sorted(set(thresholds), reverse=True)
    for threshold, total in zip(thresholds, totals, strict=True):
        assert total == pytest.approx(sum(file_score(s, profile, threshold) for s in corpus), abs=1e-9)
