"""Plan templates: every condition has its plan and every default its source; default
thresholds merge plans with the stricter band winning; settings are validated."""

from __future__ import annotations

from itertools import combinations

import pytest

from alerts.errors import InvalidPlan
from alerts.models import Bands
from alerts.plans import (
    ALERT_AFTER_MISSED,
    PLANS,
    apply_settings,
    default_thresholds,
    merge_bands,
    monitoring,
    validate_settings,
)
from devices.catalogue import METRICS


def test_a_plan_for_every_condition() -> None:
    assert set(PLANS) == {"copd", "heart_failure", "diabetes", "hypertension", "frail_alone"}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_every_default_names_its_source_and_every_metric_is_known(name: str) -> None:
    plan = PLANS[name]
    for metric in plan.thresholds:
        assert metric in METRICS and plan.sources.get(metric), metric
    for scheduled in plan.measurements:
        assert scheduled.metric in METRICS
        assert all(w.start < w.end for w in scheduled.windows)
    for rule in plan.rules - {"rate"}:
        assert plan.sources.get(rule), rule
    for rate in plan.rates:
        assert rate.source and rate.metric in METRICS


def test_copd_uses_spo2_scale_2_and_frail_alone_watches_inactivity() -> None:
    assert PLANS["copd"].news2_scale == 2 and PLANS["heart_failure"].news2_scale == 1
    inactivity = PLANS["frail_alone"].inactivity
    assert inactivity is not None and inactivity.by.hour == 10


def test_default_thresholds_are_version_zero_without_id() -> None:
    found = default_thresholds(["copd"])
    assert set(found) == {"spo2", "pulse_rate", "body_temperature"}
    assert all(t.version == 0 and t.id is None and t.metric == m for m, t in found.items())
    assert found["spo2"].bands == Bands(alert_low=84, warning_low=88)


def test_unknown_plans_have_no_defaults() -> None:
    assert default_thresholds(["no_such_plan"]) == {}


def test_merge_takes_the_stricter_band_and_a_present_one_over_an_absent_one() -> None:
    a = Bands(alert_low=80, warning_low=90, warning_high=150)
    b = Bands(alert_low=85, warning_low=88, warning_high=140, alert_high=170)
    assert merge_bands([a, b]) == Bands(alert_low=85, warning_low=90, warning_high=140, alert_high=170)


def test_merge_that_would_cross_keeps_the_first_plans_bands() -> None:
    a, b = Bands(warning_low=100), Bands(warning_high=90)
    assert merge_bands([a, b]) == a


@pytest.mark.parametrize("plans", [c for n in (1, 2, 3, 5) for c in combinations(sorted(PLANS), n)])
def test_every_combination_of_plans_gives_valid_stricter_bands(plans: tuple[str, ...]) -> None:
    for metric, threshold in default_thresholds(plans).items():
        for name in plans:
            own = PLANS[name].thresholds.get(metric)
            if own is None:
                continue
            for band, low in (("alert_low", True), ("warning_low", True),
                              ("warning_high", False), ("alert_high", False)):
                mine, merged = getattr(own, band), getattr(threshold.bands, band)
                if mine is not None:
                    assert merged is not None and (merged >= mine if low else merged <= mine)


def test_heart_failure_with_hypertension_keeps_the_lower_systolic_limits() -> None:
    found = default_thresholds(["heart_failure", "hypertension"])
    assert found["systolic_bp"].bands.warning_high == 159


@pytest.mark.parametrize(("plan", "settings", "message"), [
    ("nope", {}, "unknown plan"),
    ("copd", {"colour": "blue"}, "invalid settings"),
    ("copd", {"spo2_scale": 3}, "invalid settings"),
    ("copd", {"schedule": {"blood_glucose": {"grace_minutes": 10}}}, "schedules"),
    ("copd", {"schedule": {"spo2": {"windows": [{"start": "11:00", "end": "07:00"}]}}},
     "invalid settings"),
    ("copd", {"schedule": {"spo2": {"grace_minutes": -1}}}, "invalid settings"),
    ("copd", {"schedule": {"spo2": {"alert_after_missed": 0}}}, "invalid settings"),
    ("copd", {"schedule": {"spo2": {"alert_after_missed": "2"}}}, "invalid settings"),
    ("copd", {"inactivity": {"by": "09:00"}}, "no inactivity"),
    ("frail_alone", {"inactivity": {"by": "03:00"}}, "start < by"),
    ("heart_failure", {"weight_gain_days": 7}, "invalid settings"),
    ("heart_failure", {"valid_from": "2026-12-01T00:00:00"}, "invalid settings"),
])
def test_invalid_settings_are_refused(plan: str, settings: dict, message: str) -> None:
    with pytest.raises(InvalidPlan, match=message):
        validate_settings(plan, settings)


def test_settings_override_the_schedule() -> None:
    checked = validate_settings("copd", {"schedule": {
        "spo2": {"windows": [{"start": "07:00", "end": "09:00"}], "grace_minutes": 30},
        "body_temperature": {"enabled": False}}, "spo2_scale": 1})
    plan = apply_settings(PLANS["copd"], checked)
    (spo2,) = plan.measurements
    assert spo2.metric == "spo2" and [w.label for w in spo2.windows] == ["07:00-09:00"]
    assert spo2.grace.total_seconds() == 1800 and plan.news2_scale == 1
    # Not overridden: a day's windows (here one), at least two.
    assert spo2.alert_after is None and spo2.told_after == ALERT_AFTER_MISSED == 2
    glucose = validate_settings("diabetes", {"schedule": {"blood_glucose": {"windows": [
        {"start": f"{hour:02}:00", "end": f"{hour:02}:30"} for hour in (7, 10, 13, 16)]}}})
    assert apply_settings(PLANS["diabetes"], glucose).measurements[0].told_after == 4


def test_the_plan_that_watches_closest_decides_when_the_team_hears_of_a_miss() -> None:
    # Heart failure and hypertension both schedule a morning blood pressure.
    watched = monitoring(["heart_failure", "hypertension"], {"hypertension": {"schedule": {
        "systolic_bp": {"alert_after_missed": 1, "grace_minutes": 30}}}})
    by_window = {(s.metric, s.windows[0].label): s for s in watched.measurements}
    morning, evening = by_window["systolic_bp", "06:00-11:00"], by_window["systolic_bp", "18:00-23:00"]
    assert (morning.alert_after, morning.grace.total_seconds()) == (1, 1800)
    assert (evening.alert_after, by_window["body_weight", "06:00-11:00"].alert_after) == (1, 2)
    glucose = monitoring(["diabetes"], {}).measurements
    assert [s.alert_after for s in glucose] == [3, 3, 3]  # a day of the diabetes plan's windows


def test_monitoring_combines_plans_and_falls_back_on_invalid_stored_settings() -> None:
    watched = monitoring(["copd", "heart_failure"], {"heart_failure": {"weight_gain_kg": "lots"}})
    assert watched.news2_scale == 2 and watched.invalid_settings == ("heart_failure",)
    assert watched.weight_gain is not None and watched.weight_gain.kg == 2.0
    assert {s.metric for s in watched.measurements} == {"spo2", "body_temperature",
                                                        "body_weight", "systolic_bp"}
    assert monitoring(["unknown"], {}).rules == frozenset()
