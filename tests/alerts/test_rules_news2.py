"""NEWS2 at every band edge (RCP 2017 chart), both SpO2 scales with air/oxygen, the aggregate
bands, the single-parameter-3 trigger, the one-hour window and missing parameters."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from alerts.models import Severity
from alerts.rules import evaluate_new
from alerts.rules.news2 import (
    score,
    score_pulse,
    score_respiration,
    score_spo2_scale1,
    score_spo2_scale2,
    score_systolic,
    score_temperature,
)
from tests.alerts.test_rules_common import NOW, context, event, reading

EDGES: list[tuple[Callable[[float], int], float, int]] = [
    # respiration rate: <=8 3, 9-11 1, 12-20 0, 21-24 2, >=25 3
    *[(score_respiration, v, p) for v, p in [(5, 3), (8, 3), (9, 1), (11, 1), (12, 0), (20, 0),
                                             (21, 2), (24, 2), (25, 3), (40, 3)]],
    # SpO2 scale 1: <=91 3, 92-93 2, 94-95 1, >=96 0
    *[(score_spo2_scale1, v, p) for v, p in [(80, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1),
                                             (96, 0), (100, 0)]],
    # systolic: <=90 3, 91-100 2, 101-110 1, 111-219 0, >=220 3
    *[(score_systolic, v, p) for v, p in [(70, 3), (90, 3), (91, 2), (100, 2), (101, 1), (110, 1),
                                          (111, 0), (219, 0), (220, 3)]],
    # pulse: <=40 3, 41-50 1, 51-90 0, 91-110 1, 111-130 2, >=131 3
    *[(score_pulse, v, p) for v, p in [(30, 3), (40, 3), (41, 1), (50, 1), (51, 0), (90, 0),
                                       (91, 1), (110, 1), (111, 2), (130, 2), (131, 3)]],
    # temperature: <=35.0 3, 35.1-36.0 1, 36.1-38.0 0, 38.1-39.0 1, >=39.1 2
    *[(score_temperature, v, p) for v, p in [(34.0, 3), (35.0, 3), (35.1, 1), (36.0, 1),
                                             (36.1, 0), (38.0, 0), (38.1, 1), (39.0, 1),
                                             (39.1, 2), (41.0, 2)]],
]


@pytest.mark.parametrize(("scorer", "value", "points"), EDGES,
                         ids=[f"{s.__name__}-{v}" for s, v, _ in EDGES])
def test_parameter_band_edges(scorer: Callable[[float], int], value: float, points: int) -> None:
    assert scorer(value) == points


# SpO2 scale 2: <=83 3, 84-85 2, 86-87 1, 88-92 0, >=93 on air 0; on oxygen 93-94 1, 95-96 2, >=97 3
SCALE2 = [(80, False, 3), (83, False, 3), (84, False, 2), (85, False, 2), (86, False, 1),
          (87, False, 1), (88, False, 0), (92, False, 0), (93, False, 0), (97, False, 0),
          (100, False, 0), (83, True, 3), (87, True, 1), (88, True, 0), (92, True, 0),
          (93, True, 1), (94, True, 1), (95, True, 2), (96, True, 2), (97, True, 3), (100, True, 3)]


@pytest.mark.parametrize(("value", "oxygen", "points"), SCALE2)
def test_spo2_scale2_edges_on_air_and_oxygen(value: float, oxygen: bool, points: int) -> None:
    assert score_spo2_scale2(value, oxygen) == points


@pytest.mark.parametrize(("scorer", "value", "points"), [
    (score_spo2_scale1, 91.4, 3), (score_spo2_scale1, 91.5, 2),  # whole numbers, half up
    (score_pulse, 90.49, 0), (score_pulse, 90.5, 1),
    (score_temperature, 38.04, 0), (score_temperature, 38.05, 1),
])
def test_values_are_rounded_to_the_chart_before_banding(scorer: Callable[[float], int],
                                                        value: float, points: int) -> None:
    assert scorer(value) == points


NORMAL = {"respiration_rate": 16.0, "spo2": 97.0, "systolic_bp": 130.0, "pulse_rate": 70.0,
          "body_temperature": 37.0}


@pytest.mark.parametrize(("changes", "total", "severity"), [
    ({}, 0, None),
    ({"pulse_rate": 95.0, "spo2": 95.0}, 2, None),                        # 1 + 1
    ({"pulse_rate": 115.0, "spo2": 94.0, "body_temperature": 38.5}, 4, None),  # 2 + 1 + 1
    ({"pulse_rate": 115.0, "spo2": 93.0, "body_temperature": 38.5}, 5, Severity.YELLOW),
    ({"pulse_rate": 115.0, "spo2": 93.0, "body_temperature": 39.5}, 6, Severity.YELLOW),
    ({"pulse_rate": 115.0, "spo2": 93.0, "body_temperature": 39.5, "systolic_bp": 105.0}, 7,
     Severity.RED),
    ({"respiration_rate": 26.0}, 3, Severity.YELLOW),                     # single parameter 3
    ({"spo2": 91.0}, 3, Severity.YELLOW),
    ({"systolic_bp": 92.0, "pulse_rate": 95.0}, 3, None),                 # 3, but no single 3
])
def test_aggregate_bands_and_single_parameter_trigger(changes: dict[str, float], total: int,
                                                      severity: Severity | None) -> None:
    result = score({**NORMAL, **changes}, scale=1)
    assert result.total == total and result.severity == severity


def test_oxygen_and_confusion_add_their_points() -> None:
    assert score(NORMAL, scale=1, oxygen=True).total == 2
    result = score(NORMAL, scale=1, confused=True)
    assert result.total == 3 and result.severity is Severity.YELLOW


def test_missing_required_parameter_is_refused() -> None:
    with pytest.raises(ValueError):
        score({"pulse_rate": 70.0}, scale=1)


def _vitals(values: dict[str, float], minutes_ago: float = 0) -> tuple:
    at = NOW - timedelta(minutes=minutes_ago)
    return tuple(reading(m, v, at, device=f"d-{m}") for m, v in values.items())


def test_news2_from_new_vitals_within_the_hour_scale2_for_copd() -> None:
    earlier = _vitals({"body_temperature": 39.5}, minutes_ago=50)
    new = _vitals({"spo2": 85.0, "pulse_rate": 115.0})  # scale 2: 2; pulse 2; temperature 2
    findings = [f for f in evaluate_new(context(("copd",), readings=earlier, new=new), NOW)
                if f.rule == "news2"]
    (found,) = findings
    assert found.explanation["total"] == 6 and found.severity is Severity.YELLOW
    assert found.explanation["scale"] == 2 and found.explanation["partial"]
    assert set(found.explanation["missing"]) == {"respiration_rate", "systolic_bp"}
    assert found.occurrence == f"news2:{NOW.isoformat()}"


def test_vitals_older_than_the_window_do_not_count() -> None:
    earlier = _vitals({"body_temperature": 39.5}, minutes_ago=61)
    new = _vitals({"spo2": 85.0, "pulse_rate": 115.0})
    assert [f for f in evaluate_new(context(("copd",), readings=earlier, new=new), NOW)
            if f.rule == "news2"] == []


def test_the_same_spo2_scores_differently_on_scale1() -> None:
    new = _vitals({"spo2": 89.0, "pulse_rate": 70.0})
    copd = [f for f in evaluate_new(context(("copd",), new=new), NOW) if f.rule == "news2"]
    heart = [f for f in evaluate_new(context(("heart_failure",), new=new), NOW) if f.rule == "news2"]
    assert copd == [] and heart[0].explanation["parts"]["spo2"] == 3


def test_settings_can_switch_copd_to_scale1() -> None:
    new = _vitals({"spo2": 89.0, "pulse_rate": 70.0})
    ctx = context(("copd",), new=new, settings={"copd": {"spo2_scale": 1}})
    assert [f.explanation["scale"] for f in evaluate_new(ctx, NOW) if f.rule == "news2"] == [1]


def test_no_news2_without_spo2_or_pulse() -> None:
    new = _vitals({"respiration_rate": 30.0, "pulse_rate": 140.0})
    assert [f for f in evaluate_new(context(("copd",), new=new), NOW) if f.rule == "news2"] == []


def test_questionnaire_oxygen_answer_moves_scale2_high_band() -> None:
    new = _vitals({"spo2": 97.0, "pulse_rate": 70.0})
    on_o2 = event("questionnaire_answer", NOW - timedelta(minutes=10),
                  data={"questionnaire": "daily-check", "question": "on_oxygen", "answer": "yes"})
    (found,) = [f for f in evaluate_new(context(("copd",), new=new, events=(on_o2,)), NOW)
                if f.rule == "news2"]
    assert found.explanation["parts"]["spo2"] == 3 and found.explanation["oxygen"]
    assert found.explanation["total"] == 5


def test_implausible_vitals_take_no_part() -> None:
    new = (reading("spo2", 40, quality="implausible"), reading("pulse_rate", 70, device="p"))
    assert [f for f in evaluate_new(context(("copd",), new=new), NOW) if f.rule == "news2"] == []


def test_no_news2_for_plans_without_it() -> None:
    new = _vitals({"spo2": 80.0, "pulse_rate": 140.0})
    assert [f for f in evaluate_new(context(("diabetes",), new=new), NOW) if f.rule == "news2"] == []


def test_one_measurement_split_over_two_batches_gives_the_same_finding() -> None:
    spo2, pulse = reading("spo2", 85.0, device="ox"), reading("pulse_rate", 135.0, device="ox")
    history = (spo2, pulse)
    first = [f for f in evaluate_new(context(("copd",), readings=history, new=(spo2,)), NOW)
             if f.rule == "news2"]
    second = [f for f in evaluate_new(context(("copd",), readings=history, new=(pulse,)), NOW)
              if f.rule == "news2"]
    both = [f for f in evaluate_new(context(("copd",), new=(spo2, pulse)), NOW) if f.rule == "news2"]
    assert [f.occurrence for f in first] == [f.occurrence for f in second] == [f.occurrence for f in both]
    assert first[0].explanation == second[0].explanation == both[0].explanation
