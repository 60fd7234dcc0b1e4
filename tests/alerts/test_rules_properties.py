"""Properties of the rules (hypothesis): no rule alarms on in-band values; late data never gives
a current finding; the same context evaluated twice gives identical findings."""

from __future__ import annotations

import json
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.models import STALE_AFTER, Bands, is_current
from alerts.plans import PLANS
from alerts.rules import evaluate_new, evaluate_tick
from alerts.rules.threshold import classify
from devices.catalogue import METRICS
from tests.alerts.test_rules_common import NOW, context, device, event, reading

PLAN_SETS = st.lists(st.sampled_from(sorted(PLANS)), min_size=0, max_size=5, unique=True).map(tuple)

# Values no plan's default band, NEWS2 parameter or event rule reacts to.
IN_BAND = {"spo2": (96.0, 100.0), "pulse_rate": (51.0, 90.0), "systolic_bp": (111.0, 159.0),
           "diastolic_bp": (40.0, 99.0), "body_temperature": (36.1, 38.0),
           "blood_glucose": (3.9, 13.9), "respiration_rate": (12.0, 20.0),
           "heart_rate": (51.0, 90.0)}


@st.composite
def bands_and_inside(draw: st.DrawFn) -> tuple[Bands, float]:
    edges = sorted(draw(st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=4, max_size=4,
                                 unique=True)))
    present = draw(st.lists(st.booleans(), min_size=4, max_size=4))
    values = [e if p else None for e, p in zip(edges, present, strict=True)]
    bands = Bands(alert_low=values[0], warning_low=values[1], warning_high=values[2],
                  alert_high=values[3])
    low = next((v for v in (values[1], values[0]) if v is not None), -1e5)
    high = next((v for v in (values[2], values[3]) if v is not None), 1e5)
    return bands, draw(st.floats(low, high))


@given(bands_and_inside())
def test_threshold_never_alarms_inside_the_warning_band(case: tuple[Bands, float]) -> None:
    bands, value = case
    assert classify(value, bands) is None


@st.composite
def in_band_readings(draw: st.DrawFn) -> tuple:
    at = NOW - timedelta(minutes=draw(st.integers(0, 30)))
    metrics = draw(st.lists(st.sampled_from(sorted(IN_BAND)), min_size=1, unique=True))
    return tuple(reading(m, draw(st.floats(*IN_BAND[m])), at, device=f"d-{m}") for m in metrics)


@given(PLAN_SETS, in_band_readings(), st.integers(0, 5))
def test_no_rule_alarms_on_in_band_values(plans: tuple[str, ...], new: tuple, weight_days: int) -> None:
    # A stable weight history too: in band for the trend rule.
    history = tuple(reading("body_weight", 80.0, NOW - timedelta(days=d, hours=1), device="sc", seq=d)
                    for d in range(weight_days))
    weigh = (reading("body_weight", 80.5, NOW, device="sc", seq=99),) if weight_days else ()
    answers = (event("questionnaire_answer", data={"questionnaire": "daily-check",
                                                    "question": "more_breathless", "answer": "no"}),
               event("motion", seq=2))
    ctx = context(plans, readings=history, new=new + weigh, new_events=answers)
    assert evaluate_new(ctx, NOW) == []


OUT_OF_BAND = st.sampled_from([("spo2", 80.0), ("pulse_rate", 150.0), ("systolic_bp", 200.0),
                               ("blood_glucose", 2.0), ("body_temperature", 40.0),
                               ("spo2", 40.0), ("body_weight", 95.0)])


@given(PLAN_SETS, st.lists(OUT_OF_BAND, min_size=1, max_size=5), st.booleans(),
       st.integers(0, 3 * 86400), st.booleans())
def test_late_data_never_gives_a_current_finding(plans: tuple[str, ...], values: list,
                                                 device_delayed: bool, extra_s: int,
                                                 button: bool) -> None:
    if device_delayed:
        at, late, cause = NOW - timedelta(seconds=extra_s), True, "device"
    else:
        at, late, cause = NOW - STALE_AFTER - timedelta(seconds=1 + extra_s), True, "transit"
    assert not is_current(at, late, cause, NOW)
    # An implausible SpO2 gives a finding whatever the plans: never an empty check.
    new = tuple(reading(m, v, at, device=f"d{i}", seq=i, late=late, delay_cause=cause,
                        quality="implausible" if v == 40.0 else "valid")
                for i, (m, v) in enumerate([("spo2", 40.0), *values]))
    history = (reading("body_weight", 80.0, at - timedelta(days=1), device="sc"),
               reading("spo2", 97.0, at - timedelta(hours=2), device="ox"))
    presses = (event("emergency_button", at, late=late, delay_cause=cause),) if button else ()
    findings = evaluate_new(context(plans, readings=history, new=new, new_events=presses), NOW)
    assert findings and not any(f.is_current for f in findings)


@st.composite
def any_context(draw: st.DrawFn) -> tuple:
    plans = draw(PLAN_SETS)
    metrics = sorted(IN_BAND) + ["body_weight"]
    readings = tuple(reading(draw(st.sampled_from(metrics)), draw(st.floats(0, 300)),
                             NOW - timedelta(minutes=draw(st.integers(0, 5 * 1440))),
                             device=draw(st.sampled_from(["a", "b"])), seq=i,
                             late=draw(st.booleans()),
                             quality=draw(st.sampled_from(["valid", "implausible"])))
                     for i in range(draw(st.integers(0, 25))))
    new = tuple(r for r in readings if draw(st.booleans()))
    kinds = st.sampled_from(["motion", "emergency_button", "questionnaire_answer"])
    events = tuple(event(draw(kinds), NOW - timedelta(minutes=draw(st.integers(0, 2 * 1440))), seq=i,
                         data={"questionnaire": "q", "question": "more_breathless",
                               "answer": draw(st.sampled_from(["yes", "no"]))})
                   for i in range(draw(st.integers(0, 10))))
    devices = tuple(device(f"dev{i}", kind, online=draw(st.sampled_from([True, False, None])),
                           status_at=NOW - timedelta(hours=draw(st.integers(0, 30))),
                           battery=draw(st.floats(0, 100)), dead_letters=draw(st.integers(0, 9)))
                    for i, kind in enumerate(draw(st.lists(st.sampled_from(
                        ["scale", "bp_monitor", "pulse_oximeter", "motion_sensor", "glucometer"]),
                        max_size=4))))
    pauses = draw(st.sampled_from([(), ((NOW - timedelta(days=1), None),),
                                   ((NOW - timedelta(days=3), NOW - timedelta(days=2)),)]))
    now = NOW + timedelta(minutes=draw(st.integers(0, 1440)))
    ctx = context(plans, readings=readings, new=new, events=events, new_events=events[-2:],
                  devices=devices, pauses=pauses)
    return ctx, now


@settings(max_examples=150)
@given(any_context())
def test_evaluating_the_same_context_twice_gives_identical_findings(case: tuple) -> None:
    ctx, now = case
    for evaluate in (evaluate_new, evaluate_tick):
        first, second = evaluate(ctx, now), evaluate(ctx, now)
        assert first == second
        keys = [(f.rule, f.occurrence) for f in first]
        assert len(keys) == len(set(keys))


@settings(max_examples=100)
@given(any_context())
def test_only_the_emergency_button_escapes_a_pause(case: tuple) -> None:
    ctx, now = case
    for finding in evaluate_new(ctx, now):
        if finding.rule == "emergency_button":
            assert not finding.held
        else:
            assert finding.held == ctx.paused_at(finding.measured_at)


STRICT_FLOATS = st.floats(allow_nan=False, allow_infinity=False)  # what strict parsing admits


@st.composite
def any_readings(draw: st.DrawFn) -> tuple[tuple, tuple]:
    """Any finite values of any metric, plausible or not, over the last days, and new ones."""
    metrics = sorted(METRICS)

    def some(count: int, days: int, device_prefix: str) -> tuple:
        out = []
        for seq in range(count):
            metric = draw(st.sampled_from(metrics))
            value = draw(STRICT_FLOATS)
            spec = METRICS[metric]
            quality = "valid" if spec.possible_min <= value <= spec.possible_max else "implausible"
            at = NOW - timedelta(minutes=draw(st.integers(0, days * 1440)))
            out.append(reading(metric, value, at, device=f"{device_prefix}-{metric}", seq=seq,
                               quality=quality))
        return tuple(out)

    return some(draw(st.integers(0, 12)), 4, "h"), some(draw(st.integers(1, 4)), 0, "n")


@given(PLAN_SETS, any_readings())
@settings(max_examples=200, deadline=None)
def test_no_finite_value_makes_a_rule_fail_or_a_finding_unstorable(
        plans: tuple[str, ...], readings: tuple[tuple, tuple]) -> None:
    # A rule that raised would show as rule_failed; a finding PostgreSQL's jsonb would refuse
    # (NaN, infinity) would fail the batch that stores it.
    history, new = readings
    ctx = context(plans, readings=history, new=new)
    findings = evaluate_new(ctx, NOW) + evaluate_tick(ctx, NOW)
    assert not [f.rule for f in findings if f.rule.startswith("rule_failed:")]
    for finding in findings:
        json.dumps(finding.explanation, allow_nan=False, default=str)
