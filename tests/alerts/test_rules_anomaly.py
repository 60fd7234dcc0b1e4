"""Personal-baseline rules on hand-built contexts: a reading rare for her, the SpO2-with-pulse
pair, a morning without motion past her usual first motion, and nothing while learning."""

from __future__ import annotations

import math
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from alerts.baselines import (
    FIRST_MOTION,
    SPO2_PULSE,
    AlertSpan,
    excluded_periods,
    series_of,
    train_citizen,
)
from alerts.context import PROPOSED_VERSION
from alerts.models import (
    Bands,
    CitizenContext,
    DeviceState,
    EventView,
    ReadingView,
    Series,
    Threshold,
)
from alerts.rules import anomaly, evaluate_new, evaluate_tick
from anomaly.baseline import ACTIVE, LEARNING, Baseline

NOW = datetime(2026, 3, 2, 7, 30, tzinfo=UTC)  # 08:30 in Copenhagen
CITIZEN = uuid.UUID(int=7)


def wiggle(i: int) -> float:
    """Deterministic day-to-day variation in [-1, 1]."""
    return 0.6 * math.sin(i * 1.7) + 0.4 * math.sin(i * 0.31)


def oximeter(days: int, end: datetime = NOW) -> list[ReadingView]:
    """Twice a day for `days` days before `end`: SpO2 about 95, pulse about 72."""
    readings = []
    for i in range(days * 2):
        at = end - timedelta(hours=12 * (days * 2 - i))
        readings += [ReadingView("ox-1", "spo2", at, i, round(95 + wiggle(i), 0), at),
                     ReadingView("ox-1", "pulse_rate", at, i, round(72 + 4 * wiggle(i + 3), 0), at)]
    return readings


def trained(plans: tuple[str, ...], readings: list[ReadingView], events: list[EventView] = (),
            excluded: dict[str, list[tuple[datetime, datetime | None]]] | None = None
            ) -> dict[str, Baseline]:
    metrics = {m: Series.of(readings, m) for m in {r.metric for r in readings}}
    return train_citizen(series_of(plans), metrics, readings, list(events), excluded or {}, NOW)


def context(plans: tuple[str, ...], history: list[ReadingView], new: list[ReadingView],
            baselines: dict[str, Baseline], events: list[EventView] = (),
            devices: tuple[DeviceState, ...] = ()) -> CitizenContext:
    return CitizenContext(citizen_id=CITIZEN, plans=plans, thresholds={},
                          readings=tuple(history + new), events=tuple(events),
                          new_readings=tuple(new), devices=devices, baselines=baselines)


def pair(spo2: float, pulse: float, at: datetime = NOW) -> list[ReadingView]:
    return [ReadingView("ox-1", "spo2", at, 999, spo2, at),
            ReadingView("ox-1", "pulse_rate", at, 999, pulse, at)]


def rules(findings: list) -> set[str]:
    return {f.rule for f in findings}


def test_an_in_band_spo2_rare_for_her_is_found_with_her_usual_value() -> None:
    history = oximeter(30)
    baselines = trained(("copd",), history)
    assert baselines["spo2"].status == ACTIVE
    found = [f for f in anomaly.evaluate_new(context(("copd",), history, pair(90, 72), baselines), NOW)
             if f.rule == "anomaly:spo2"]
    assert len(found) == 1
    assert 94 <= found[0].explanation["usual"] <= 96
    assert found[0].explanation["score"] >= anomaly.ALARM_SCORE
    assert "unusual for her" in found[0].summary


def test_her_usual_values_raise_nothing() -> None:
    history = oximeter(30)
    baselines = trained(("copd",), history)
    ctx = context(("copd",), history, pair(95, 72), baselines)
    assert not [f for f in evaluate_new(ctx, NOW) if f.rule.startswith("anomaly:")]


def test_spo2_down_with_pulse_up_is_found_as_a_pair() -> None:
    history = oximeter(30)
    baselines = trained(("copd",), history)
    assert baselines[SPO2_PULSE].status == ACTIVE
    worse = anomaly.evaluate_new(context(("copd",), history, pair(93, 86), baselines), NOW)
    both_down = anomaly.evaluate_new(context(("copd",), history, pair(93, 60), baselines), NOW)
    assert "anomaly:spo2_pulse" in rules(worse)
    assert "anomaly:spo2_pulse" not in rules(both_down)


def test_a_citizen_in_her_learning_period_raises_no_anomaly_finding() -> None:
    history = oximeter(10)  # 20 measurements, but watched for 10 days of the 14
    baselines = trained(("copd",), history)
    assert {b.status for b in baselines.values()} == {LEARNING}
    assert baselines["spo2"].learning_until == history[0].measured_at + timedelta(days=14)
    ctx = context(("copd",), history, pair(85, 110), baselines)
    assert not anomaly.evaluate_new(ctx, NOW)


def test_a_clinical_alert_leaves_its_own_series_out_of_the_baseline() -> None:
    history = oximeter(30)
    days = [NOW - timedelta(days=d) for d in range(31)]
    episode = AlertSpan("threshold:spo2", days[6], days[4], days[2], "contacted_citizen")
    cleared = AlertSpan("anomaly:spo2", days[20], days[20], days[19], "not_actionable")
    device = AlertSpan("device_offline", days[29], days[29], None, None)
    symptom = AlertSpan("questionnaire", days[28], days[28], None, None)
    open_pulse = AlertSpan("threshold:pulse_rate", days[10], days[9], None, None)
    excluded = excluded_periods([episode, cleared, device, symptom, open_pulse], [])
    baselines = trained(("copd",), history, excluded=excluded)
    # The episode from two days before its first measurement until it was resolved: 6 days.
    assert (baselines["spo2"].excluded, baselines["spo2"].rows) == (12, 60 - 12)
    # Still open: from two days before its first measurement to its last (3 days).
    assert baselines["pulse_rate"].excluded == 6
    # Neither a symptom answer, a device alert nor a not-actionable one leaves anything out.
    assert baselines["body_temperature"].excluded == 0
    assert set(excluded) == {"spo2", "spo2_pulse", "pulse_rate"}


def test_a_blood_pressure_alert_leaves_out_both_its_parts() -> None:
    days = [NOW - timedelta(days=d) for d in range(6)]
    high = AlertSpan("threshold:blood_pressure", days[5], days[4], days[3], "contacted_citizen")
    assert set(excluded_periods([high], [])) == {"systolic_bp", "diastolic_bp"}


def test_a_series_that_never_varied_alarms_on_a_real_fall_not_on_one_step() -> None:
    flat = [r if r.metric != "spo2" else ReadingView(r.device_id, "spo2", r.measured_at, r.seq,
                                                     97.0, r.received_at)
            for r in oximeter(30)]
    baselines = trained(("copd",), flat)
    assert baselines["spo2"].value_feature() == (97.0, 1.0)  # spread floored at one percent
    step = anomaly.evaluate_new(context(("copd",), flat, pair(96, 72), baselines), NOW)
    fall = anomaly.evaluate_new(context(("copd",), flat, pair(91, 72), baselines), NOW)
    assert "anomaly:spo2" not in rules(step)
    assert "anomaly:spo2" in rules(fall)


def test_a_rise_in_spo2_is_no_anomaly() -> None:
    history = oximeter(30)
    baselines = trained(("copd",), history)
    assert "anomaly:spo2" not in rules(
        anomaly.evaluate_new(context(("copd",), history, pair(100, 72), baselines), NOW))


def test_baselines_of_a_plan_no_longer_in_force_raise_nothing() -> None:
    history = oximeter(30)
    baselines = trained(("copd",), history)
    assert not anomaly.evaluate_new(context((), history, pair(85, 110), baselines), NOW)


def motion_days(days: int, end_day: datetime) -> list[EventView]:
    """A first motion about 07:00 Copenhagen (06:00 UTC in winter) each morning, then more."""
    events = []
    for d in range(days, 0, -1):
        first = end_day - timedelta(days=d) + timedelta(hours=6, minutes=20 * wiggle(d))
        for k in range(3):
            at = first + timedelta(hours=2 * k)
            events.append(EventView("mo-1", "motion", at, d * 10 + k, at))
    return events


def sensor(now: datetime) -> tuple[DeviceState, ...]:
    return (DeviceState("mo-1", "motion_sensor", True, now, now, 90.0),)


def test_no_motion_long_past_her_usual_first_motion_is_red() -> None:
    day = datetime(2026, 3, 2, tzinfo=UTC)
    events = motion_days(30, day)
    baselines = trained(("frail_alone",), [], events)
    assert baselines[FIRST_MOTION].status == ACTIVE
    late = day + timedelta(hours=8, minutes=30)  # 09:30 Copenhagen
    early = day + timedelta(hours=6, minutes=10)  # 07:10
    ctx_late = CitizenContext(CITIZEN, ("frail_alone",), {}, events=tuple(events),
                              devices=sensor(late), baselines=baselines)
    found = anomaly.late_morning(ctx_late, late)
    assert [(f.rule, f.severity.value) for f in found] == [("anomaly:first_motion", "red")]
    assert "usually about 07:" in found[0].summary
    assert not anomaly.late_morning(ctx_late, early)
    moved = (*events, EventView("mo-1", "motion", day + timedelta(hours=7), 1, day + timedelta(hours=7)))
    ctx_moved = CitizenContext(CITIZEN, ("frail_alone",), {}, events=moved, devices=sensor(late),
                               baselines=baselines)
    assert "anomaly:first_motion" not in rules(evaluate_tick(ctx_moved, late))


def test_at_most_the_last_points_since_training_are_brought_to_a_peek() -> None:
    readings = [r for r in oximeter(40) if r.metric == "spo2"]
    series = Series.of(readings, "spo2")
    trained_through = readings[9].measured_at
    recent = anomaly._recent(series, trained_through, readings[-1].measured_at)
    assert recent == readings[-1 - anomaly.SINCE_MAX:-1]
    few = anomaly._recent(series, readings[-5].measured_at, readings[-1].measured_at)
    assert few == readings[-4:-1]


def cuff(days: int, systolic: float, end: datetime = NOW) -> list[ReadingView]:
    """Twice a day for `days` days before `end`: systolic about `systolic` (± 8), diastolic 85."""
    readings = []
    for i in range(days * 2):
        at = end - timedelta(hours=12 * (days * 2 - i))
        readings += [ReadingView("bp-1", "systolic_bp", at, i, round(systolic + 8 * wiggle(i)), at),
                     ReadingView("bp-1", "diastolic_bp", at, i, round(85 + 3 * wiggle(i + 5)), at)]
    return readings


def bp(systolic: float, diastolic: float = 85) -> list[ReadingView]:
    return [ReadingView("bp-1", "systolic_bp", NOW, 999, systolic, NOW),
            ReadingView("bp-1", "diastolic_bp", NOW, 999, diastolic, NOW)]


def thresholds_found(plans: tuple[str, ...], history: list[ReadingView], new: list[ReadingView],
                     baselines: dict[str, Baseline],
                     thresholds: dict[str, Threshold] | None = None) -> list[tuple[str, str]]:
    ctx = replace(context(plans, history, new, baselines), thresholds=thresholds or {})
    return [(f.rule, f.severity.value) for f in evaluate_new(ctx, NOW)
            if f.rule.startswith("threshold:")]


def test_a_warning_within_her_usual_range_is_not_raised_once_her_baseline_has_learnt() -> None:
    history = cuff(30, 156)  # she lives around the 159 warning limit
    baselines = trained(("hypertension",), history)
    assert baselines["systolic_bp"].status == ACTIVE
    assert thresholds_found(("hypertension",), history, bp(160), baselines) == []
    # Beyond one spread of her usual: raised; the red band: always raised.
    assert thresholds_found(("hypertension",), history, bp(162), baselines) == [
        ("threshold:blood_pressure", "yellow")]
    assert thresholds_found(("hypertension",), history, bp(181), baselines) == [
        ("threshold:blood_pressure", "red")]
    # Her diastolic is usually 85, far from its 99 limit: a 104 is raised.
    assert thresholds_found(("hypertension",), history, bp(150, 104), baselines) == [
        ("threshold:blood_pressure", "yellow")]


def test_while_her_baseline_learns_every_warning_is_raised() -> None:
    history = cuff(10, 156)
    baselines = trained(("hypertension",), history)
    assert baselines["systolic_bp"].status == LEARNING
    assert thresholds_found(("hypertension",), history, bp(165), baselines) == [
        ("threshold:blood_pressure", "yellow")]


def test_a_limit_far_from_her_usual_is_never_moved() -> None:
    history = cuff(30, 128)  # well controlled: 159 is far above her usual
    baselines = trained(("hypertension",), history)
    assert thresholds_found(("hypertension",), history, bp(162), baselines) == [
        ("threshold:blood_pressure", "yellow")]


def test_red_is_raised_even_when_it_is_usual_for_her() -> None:
    history = cuff(30, 177)
    baselines = trained(("hypertension",), history)
    assert thresholds_found(("hypertension",), history, bp(181), baselines) == [
        ("threshold:blood_pressure", "red")]


def test_a_limit_her_nurse_set_is_not_moved_again() -> None:
    history = cuff(30, 156)
    baselines = trained(("hypertension",), history)
    own = Threshold("systolic_bp", Bands(alert_low=90, warning_low=100, warning_high=159,
                                          alert_high=179), version=2, id=7)
    assert thresholds_found(("hypertension",), history, bp(160), baselines,
                            {"systolic_bp": own}) == [("threshold:blood_pressure", "yellow")]


def test_a_low_limit_is_never_moved() -> None:
    history = cuff(30, 92)  # heart failure, living just above the 90 warning limit
    baselines = trained(("heart_failure",), history)
    assert baselines["systolic_bp"].status == ACTIVE
    assert thresholds_found(("heart_failure",), history, bp(89, 60), baselines) == [
        ("threshold:blood_pressure", "yellow")]


def test_a_pressure_whose_usual_is_over_the_limit_is_always_raised() -> None:
    history = cuff(30, 162)  # uncontrolled, just over the limit: her nurse must see it
    baselines = trained(("hypertension",), history)
    assert thresholds_found(("hypertension",), history, bp(165), baselines) == [
        ("threshold:blood_pressure", "yellow")]


def test_a_proposed_limit_is_not_moved_in_a_what_if() -> None:
    history = cuff(30, 156)
    baselines = trained(("hypertension",), history)
    proposed = Threshold("systolic_bp", Bands(alert_low=90, warning_low=100, warning_high=159,
                                               alert_high=179), version=PROPOSED_VERSION)
    assert thresholds_found(("hypertension",), history, bp(160), baselines,
                            {"systolic_bp": proposed}) == [("threshold:blood_pressure", "yellow")]


def test_glucose_warnings_are_never_moved() -> None:
    history = []
    for i in range(90):
        at = NOW - timedelta(hours=8 * (90 - i))
        history.append(ReadingView("gl-1", "blood_glucose", at, i,
                                   round(13.6 + 0.8 * wiggle(i), 1), at))
    baselines = trained(("diabetes",), history)
    assert baselines["blood_glucose"].status == ACTIVE
    high = [ReadingView("gl-1", "blood_glucose", NOW, 999, 14.0, NOW)]
    assert thresholds_found(("diabetes",), history, high, baselines) == [
        ("threshold:blood_glucose", "yellow")]
