"""Threshold rule at every band edge, blood pressure per component and one finding per
measurement, versions recorded, and implausible values judged per metric."""

from __future__ import annotations

from datetime import timedelta

import pytest

from alerts import triage
from alerts.models import Bands, Severity, Threshold
from alerts.rules import evaluate_new
from alerts.rules.threshold import classify, sign_of
from tests.alerts.test_rules_common import NOW, context, reading

BANDS = Bands(alert_low=84, warning_low=88, warning_high=110, alert_high=130)


@pytest.mark.parametrize(("value", "expected"), [
    (83.99, (Severity.RED, "alert_low")),
    (84.0, (Severity.YELLOW, "warning_low")),   # at the alert limit: inside it
    (87.99, (Severity.YELLOW, "warning_low")),
    (88.0, None),                                # at the warning limit: inside
    (100.0, None),
    (110.0, None),
    (110.01, (Severity.YELLOW, "warning_high")),
    (130.0, (Severity.YELLOW, "warning_high")),
    (130.01, (Severity.RED, "alert_high")),
])
def test_classify_at_every_band_edge(value: float, expected: tuple[Severity, str] | None) -> None:
    found = classify(value, BANDS)
    assert (found[:2] if found else None) == expected


def test_absent_bands_never_alarm() -> None:
    only_low = Bands(alert_low=84, warning_low=88)
    assert classify(1000.0, only_low) is None
    assert classify(87.0, only_low) is not None
    assert classify(-5.0, Bands()) is None


@pytest.mark.parametrize(("plan", "metric", "value", "severity"), [
    ("copd", "spo2", 83, Severity.RED), ("copd", "spo2", 84, Severity.YELLOW),
    ("copd", "spo2", 87, Severity.YELLOW), ("copd", "spo2", 88, None), ("copd", "spo2", 99, None),
    ("diabetes", "blood_glucose", 2.9, Severity.RED), ("diabetes", "blood_glucose", 3.0, Severity.YELLOW),
    ("diabetes", "blood_glucose", 3.8, Severity.YELLOW), ("diabetes", "blood_glucose", 3.9, None),
    ("diabetes", "blood_glucose", 13.9, None), ("diabetes", "blood_glucose", 14.0, Severity.YELLOW),
    ("diabetes", "blood_glucose", 33.3, Severity.YELLOW),
    ("diabetes", "blood_glucose", 33.4, Severity.RED),
    ("hypertension", "systolic_bp", 159, None), ("hypertension", "systolic_bp", 160, Severity.YELLOW),
    ("hypertension", "systolic_bp", 179, Severity.YELLOW), ("hypertension", "systolic_bp", 180, Severity.RED),
    ("hypertension", "systolic_bp", 100, None), ("hypertension", "systolic_bp", 99, Severity.YELLOW),
    ("hypertension", "systolic_bp", 90, Severity.YELLOW), ("hypertension", "systolic_bp", 89, Severity.RED),
    ("hypertension", "diastolic_bp", 99, None), ("hypertension", "diastolic_bp", 100, Severity.YELLOW),
    ("hypertension", "diastolic_bp", 109, Severity.YELLOW),
    ("hypertension", "diastolic_bp", 110, Severity.RED),
    ("heart_failure", "systolic_bp", 90, None), ("heart_failure", "systolic_bp", 89, Severity.YELLOW),
    ("heart_failure", "systolic_bp", 60, Severity.YELLOW),
    ("heart_failure", "pulse_rate", 39, Severity.RED), ("heart_failure", "pulse_rate", 40, Severity.YELLOW),
    ("heart_failure", "pulse_rate", 50, None), ("heart_failure", "pulse_rate", 110, None),
    ("heart_failure", "pulse_rate", 111, Severity.YELLOW), ("heart_failure", "pulse_rate", 131, Severity.RED),
    ("copd", "body_temperature", 34.9, Severity.RED), ("copd", "body_temperature", 35.0, None),
    ("copd", "body_temperature", 35.5, None), ("copd", "body_temperature", 38.0, None),
    ("copd", "body_temperature", 38.1, Severity.YELLOW), ("copd", "body_temperature", 39.1, Severity.RED),
])
def test_plan_defaults_at_their_edges(plan: str, metric: str, value: float,
                                      severity: Severity | None) -> None:
    new = reading(metric, value)
    found = [f for f in evaluate_new(context((plan,), new=(new,)), NOW)
             if f.rule == f"threshold:{sign_of(metric)}"]
    assert [f.severity for f in found] == ([severity] if severity else [])


def test_finding_records_threshold_version_band_and_value() -> None:
    own = Threshold("spo2", Bands(alert_low=80, warning_low=85), version=3, id=42)
    new = reading("spo2", 84)
    (found,) = evaluate_new(context(("copd",), new=(new,), thresholds={"spo2": own}), NOW)
    assert found.rule == "threshold:spo2" and found.severity is Severity.YELLOW
    assert found.threshold_id == 42 and found.threshold_version == 3
    assert found.explanation["band"] == "warning_low" and found.explanation["limit"] == 85
    assert found.explanation["threshold_version"] == 3 and found.explanation["value"] == 84
    assert found.explanation["metric"] == "spo2" and found.occurrence == new.occurrence


def test_default_thresholds_are_version_zero_without_id() -> None:
    (found,) = evaluate_new(context(("copd",), new=(reading("spo2", 80),)), NOW)
    assert found.threshold_version == 0 and found.threshold_id is None


def test_blood_pressure_components_are_judged_separately() -> None:
    sys_, dia = reading("systolic_bp", 150), reading("diastolic_bp", 112)
    (found,) = evaluate_new(context(("hypertension",), new=(sys_, dia)), NOW)
    assert (found.rule, found.severity) == ("threshold:blood_pressure", Severity.RED)
    assert found.explanation["metric"] == "diastolic_bp" and found.occurrence == dia.occurrence


def test_one_blood_pressure_is_one_finding_as_severe_as_its_worse_part() -> None:
    sys_, dia = reading("systolic_bp", 185), reading("diastolic_bp", 104)
    (found,) = evaluate_new(context(("hypertension",), new=(dia, sys_)), NOW)
    assert (found.rule, found.severity) == ("threshold:blood_pressure", Severity.RED)
    assert found.explanation["metrics"] == ["systolic_bp", "diastolic_bp"]
    assert [(p["metric"], p["band"]) for p in found.explanation["parts"]] == [
        ("systolic_bp", "alert_high"), ("diastolic_bp", "warning_high")]
    assert found.occurrence == sys_.occurrence and "185" in found.summary and "104" in found.summary


def test_two_red_parts_give_the_same_finding_in_either_order() -> None:
    sys_, dia = reading("systolic_bp", 200), reading("diastolic_bp", 120)
    (one,) = evaluate_new(context(("hypertension",), new=(sys_, dia)), NOW)
    (other,) = evaluate_new(context(("hypertension",), new=(dia, sys_)), NOW)
    assert one == other and one.occurrence == dia.occurrence


def test_two_blood_pressures_are_two_findings() -> None:
    earlier = NOW - timedelta(hours=1)
    found = evaluate_new(context(("hypertension",), new=(
        reading("systolic_bp", 165, earlier), reading("diastolic_bp", 101, earlier),
        reading("systolic_bp", 170, seq=2), reading("diastolic_bp", 95, seq=2))), NOW)
    assert [(f.rule, f.explanation.get("metrics")) for f in found] == [
        ("threshold:blood_pressure", ["diastolic_bp", "systolic_bp"]),
        ("threshold:blood_pressure", None)]


def test_a_metric_without_threshold_raises_nothing() -> None:
    assert evaluate_new(context(("copd",), new=(reading("body_weight", 300),)), NOW) == []


def test_implausible_spo2_is_a_device_problem_not_an_emergency() -> None:
    new = reading("spo2", 42, quality="implausible")
    (found,) = evaluate_new(context(("copd",), new=(new,)), NOW)
    assert found.rule == "implausible:pulse_oximetry" and found.severity is Severity.YELLOW
    assert found.explanation["taken_as"] == "device"


def test_a_garbled_measurement_is_one_device_problem_named_by_the_measurement() -> None:
    parts = [reading(metric, value, quality="implausible", device="cuff-1")
             for metric, value in (("systolic_bp", 400), ("diastolic_bp", 5), ("pulse_rate", 0))]
    (found,) = evaluate_new(context(("hypertension",), new=tuple(parts)), NOW)
    assert found.rule == "implausible:blood_pressure" and found.severity is Severity.YELLOW
    assert found.explanation["metrics"] == ["diastolic_bp", "pulse_rate", "systolic_bp"]
    assert found.occurrence == parts[1].occurrence
    # The same identity whatever order the readings come in (exactly-once rests on it).
    (again,) = evaluate_new(context(("hypertension",), new=tuple(reversed(parts))), NOW)
    assert again == found


def test_an_impossible_pulse_is_named_by_the_measurement_it_came_with() -> None:
    spo2, pulse = reading("spo2", 96, device="ox-1"), reading("pulse_rate", 0, device="ox-1",
                                                              quality="implausible")
    (found,) = evaluate_new(context(("copd",), new=(spo2, pulse)), NOW)
    assert found.rule == "implausible:pulse_oximetry" and found.occurrence == pulse.occurrence


def test_implausible_glucose_low_is_the_emergency_itself() -> None:
    new = reading("blood_glucose", 0.3, quality="implausible")
    (found,) = evaluate_new(context(("diabetes",), new=(new,)), NOW)
    assert found.rule == "threshold:blood_glucose" and found.severity is Severity.RED
    assert found.explanation["quality"] == "implausible"


def test_late_breach_is_raised_as_old_data() -> None:
    new = reading("spo2", 80, NOW, late=True, delay_cause="device")
    (found,) = evaluate_new(context(("copd",), new=(new,)), NOW)
    assert found.severity is Severity.RED and not found.is_current and found.delay_cause == "device"


def test_a_blood_pressure_alert_is_shown_with_both_parts_readings() -> None:
    assert triage.metrics_of("threshold:blood_pressure", {"metric": "diastolic_bp"}) == (
        "systolic_bp", "diastolic_bp")
    assert triage.metrics_of("threshold:spo2", {"metric": "spo2"}) == ("spo2",)


def test_a_measurement_cut_by_the_engine_is_judged_whole_with_the_same_identity() -> None:
    sys_, dia = reading("systolic_bp", 165), reading("diastolic_bp", 112)
    (whole,) = evaluate_new(context(("hypertension",), new=(sys_, dia)), NOW)
    # Another batch took only the in-band part: the measurement is judged as it was stored.
    (first,) = evaluate_new(context(("hypertension",), readings=(dia,), new=(sys_,)), NOW)
    (second,) = evaluate_new(context(("hypertension",), readings=(sys_,), new=(dia,)), NOW)
    assert first == second == whole and whole.severity is Severity.RED
    garbled = [reading(m, v, seq=2, quality="implausible") for m, v in (("systolic_bp", 400),
                                                                        ("pulse_rate", 0))]
    (problem,) = evaluate_new(context(("hypertension",), readings=(garbled[0],),
                                      new=(garbled[1],)), NOW)
    assert problem.rule == "implausible:blood_pressure"
