"""Heart-failure weight gain (>2 kg within 3 days against the window's lowest) and rate of
change (COPD: SpO2 fall of 3 points within 24 h, BTS)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from alerts.models import Severity
from alerts.rules import evaluate_new
from tests.alerts.test_rules_common import NOW, context, reading

DAY = timedelta(days=1)


def _weights(*values_days_ago: tuple[float, float]) -> tuple:
    return tuple(reading("body_weight", v, NOW - d * DAY, seq=i, device="scale")
                 for i, (v, d) in enumerate(values_days_ago))


def _gain(history: tuple, new_value: float, plans: tuple[str, ...] = ("heart_failure",),
          settings: dict | None = None) -> list:
    new = reading("body_weight", new_value, NOW, seq=99, device="scale")
    return [f for f in evaluate_new(context(plans, readings=history, new=(new,), settings=settings), NOW)
            if f.rule == "trend:weight_gain"]


@pytest.mark.parametrize(("new_value", "raised"), [(82.0, False), (82.01, True), (82.1, True)])
def test_gain_of_more_than_two_kg_against_the_lowest(new_value: float, raised: bool) -> None:
    history = _weights((81.0, 2.5), (80.0, 2.0), (81.5, 1.0))
    found = _gain(history, new_value)
    assert bool(found) == raised
    if raised:
        assert found[0].severity is Severity.YELLOW and found[0].explanation["lowest"] == 80.0


def test_exactly_two_kg_in_float_arithmetic_is_not_more() -> None:
    assert _gain(_weights((79.3, 1.0)), 81.3) == []


def test_lowest_outside_three_days_does_not_count() -> None:
    history = _weights((78.0, 3.1), (80.5, 2.0))
    assert _gain(history, 82.0) == []
    assert _gain(_weights((78.0, 2.9)), 80.5) != []


def test_only_heart_failure_plans_watch_weight_gain() -> None:
    assert _gain(_weights((70.0, 1.0)), 75.0, plans=("diabetes",)) == []


def test_settings_change_the_limit() -> None:
    history = _weights((80.0, 1.0))
    assert _gain(history, 81.6) == []
    assert _gain(history, 81.6, settings={"heart_failure": {"weight_gain_kg": 1.5}}) != []


def test_implausible_weights_are_ignored() -> None:
    history = (reading("body_weight", 5.0, NOW - DAY, quality="implausible", device="scale"),)
    assert _gain(history, 80.0) == []


def _spo2(*values_hours_ago: tuple[float, float]) -> tuple:
    return tuple(reading("spo2", v, NOW - timedelta(hours=h), seq=i, device="ox")
                 for i, (v, h) in enumerate(values_hours_ago))


@pytest.mark.parametrize(("new_value", "raised"), [(92.0, False), (91.6, False), (91.5, True),
                                                    (90.0, True)])
def test_spo2_fall_of_three_points_against_the_mean_of_two_days(new_value: float,
                                                                 raised: bool) -> None:
    history = _spo2((97.0, 49.0), (94.0, 40.0), (95.0, 10.0))  # the 97 is outside 48 h
    new = reading("spo2", new_value, NOW, seq=9, device="ox")
    found = [f for f in evaluate_new(context(("copd",), readings=history, new=(new,)), NOW)
             if f.rule == "rate:spo2"]
    assert bool(found) == raised
    if raised:
        assert found[0].explanation["reference_mean"] == 94.5
        assert found[0].explanation["reference_readings"] == 2
        assert found[0].severity is Severity.YELLOW


def test_rate_needs_two_earlier_readings_within_the_window() -> None:
    new = reading("spo2", 85.0, NOW, seq=9, device="ox")
    ctx = context(("copd",), readings=_spo2((97.0, 49.0), (97.0, 25.0)), new=(new,))
    assert [f for f in evaluate_new(ctx, NOW) if f.rule == "rate:spo2"] == []
