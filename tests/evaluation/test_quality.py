"""evaluation.quality at its boundaries: overlap, lead time, percentiles, empty kinds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from evaluation.quality import (
    POOLED,
    Period,
    RaisedAlert,
    TrueEpisode,
    figures,
    kind_figures,
    looks_at,
    match,
    non_actionable,
    overlaps,
    quantile,
    scored,
)

T0 = datetime(2025, 1, 6, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
PERIOD = Period(T0, T0 + 28 * D, citizens=2)
HF = TrueEpisode("e1", "a", "hf_decompensation", onset=T0 + 5 * D, crisis=T0 + 10 * D,
                 last=T0 + 14 * D, metrics=("body_weight", "pulse_rate", "questionnaire_answer"))


def alert(at: datetime, rule: str = "trend:weight_gain", citizen: str = "a") -> RaisedAlert:
    return RaisedAlert(citizen, rule, "yellow", at)


@pytest.mark.parametrize(("opened", "citizen", "expected"), [
    (HF.onset - timedelta(seconds=1), "a", False),  # just before onset
    (HF.onset, "a", True),
    (HF.crisis, "a", True),
    (HF.last, "a", True),  # last is inclusive
    (HF.last + timedelta(seconds=1), "a", False),  # no margin after it
    (HF.crisis, "b", False),  # another citizen
])
def test_overlap_is_same_citizen_within_onset_and_last(opened: datetime, citizen: str,
                                                       expected: bool) -> None:
    assert overlaps(alert(opened, citizen=citizen), HF) is expected


@pytest.mark.parametrize(("opened", "lead", "ahead"), [
    (HF.crisis - 30 * H, 30.0, True),
    (HF.crisis - 24 * H, 24.0, True),  # exactly 24 h counts as ahead
    (HF.crisis - 23 * H, 23.0, False),
    (HF.crisis, 0.0, False),
    (HF.crisis + 5 * H, -5.0, False),  # after the crisis: negative
])
def test_lead_time_is_crisis_minus_first_alert(opened: datetime, lead: float,
                                               ahead: bool) -> None:
    (found,) = match([HF], [alert(HF.crisis + 48 * H), alert(opened)])
    assert found.lead_h == pytest.approx(lead)
    assert found.ahead is ahead


def test_missed_episode_has_no_lead() -> None:
    (found,) = match([HF], [alert(HF.onset - H), alert(HF.crisis, citizen="b")])
    assert found.first is None and found.lead_h is None and not found.ahead


@pytest.mark.parametrize(("values", "q", "expected"), [
    ([], 0.1, None),
    ([7.0], 0.1, 7.0),
    ([10.0, 0.0], 0.1, 1.0),
    ([3.0, 1.0, 2.0], 0.5, 2.0),
    ([0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0], 0.1, 10.0),
])
def test_quantile_interpolates_like_numpy(values: list[float], q: float,
                                          expected: float | None) -> None:
    assert quantile(values, q) == expected


def test_empty_kind_has_no_shares() -> None:
    empty = kind_figures([])
    assert (empty.episodes, empty.caught, empty.caught_ahead, empty.lead_median_h,
            empty.lead_p10_h) == (0, None, None, None, None)


def test_episodes_not_wholly_in_the_period_are_not_scored() -> None:
    early = TrueEpisode("e0", "a", "bp_rise", T0 - D, T0 + D, T0 + 2 * D)
    late = TrueEpisode("e9", "a", "bp_rise", T0 + 27 * D, T0 + 29 * D, T0 + 30 * D)
    assert scored([early, HF, late], PERIOD) == [HF]


def test_non_actionable_counts_alerts_outside_every_episode_even_unscored() -> None:
    early = TrueEpisode("e0", "b", "inactivity", T0 - D, T0 - D, T0 + H)
    inside, outside, during_early = alert(HF.crisis), alert(HF.onset - H), alert(T0, citizen="b")
    assert non_actionable([inside, outside, during_early], [HF, early]) == [outside]


def test_figures_of_a_population() -> None:
    hypo = TrueEpisode("e2", "b", "hypoglycaemia", T0 + 3 * D, T0 + 3 * D,
                       T0 + 3 * D + timedelta(minutes=12), metrics=("blood_glucose",))
    alerts = [alert(HF.crisis - 48 * H),  # catches HF two days ahead
              alert(HF.crisis - 60 * H, rule="missed:body_weight"),  # adherence: not a catch
              alert(T0 + 20 * D, rule="missed:body_weight"),  # non-actionable
              alert(T0 + 40 * D)]  # after the period: not counted
    # The hypo's low repeats an open glucose alert: caught only by finding.
    findings = [alert(hypo.onset + timedelta(minutes=5), rule="threshold:blood_glucose",
                      citizen="b"),
                alert(HF.crisis - 2 * H, rule="missed:body_weight")]
    result = figures([HF, hypo], alerts, PERIOD, nurses=2, kinds=("bp_rise",),
                     findings=findings, reminders=4)
    hf = result.by_kind["hf_decompensation"]
    assert (hf.episodes, hf.caught, hf.caught_ahead, hf.lead_median_h) == (1, 1.0, 1.0, 48.0)
    assert hf.caught_any_rule == 1.0 and hf.first_rules == {"trend:weight_gain": 1}
    hypo_figures = result.by_kind["hypoglycaemia"]
    assert (hypo_figures.caught, hypo_figures.caught_by_finding) == (0.0, 1.0)
    assert hf.caught_by_finding == 0.0  # the adherence finding does not count
    assert result.by_kind["bp_rise"].episodes == 0
    assert result.by_kind[POOLED].episodes == 1
    assert result.alerts == 3 and result.non_actionable == 1
    assert result.non_actionable_per_citizen_week == pytest.approx(1 / 8)
    assert result.alerts_per_nurse_day == pytest.approx(3 / 28 / 2)
    assert result.reminders_per_citizen_week == pytest.approx(4 / 8)
    assert result.by_rule["missed:body_weight"].overlapping == 1
    weight = result.by_rule["trend:weight_gain"]
    assert (weight.eligible_episodes, weight.caught_episodes, weight.lead_median_h) == (1, 1, 48.0)
    assert result.by_rule["missed:body_weight"].eligible_episodes == 0


@pytest.mark.parametrize(("rule", "signs"), [
    ("threshold:spo2", ("spo2",)), ("anomaly:body_weight", ("body_weight",)),
    ("threshold:blood_pressure", ("systolic_bp", "diastolic_bp")),
    ("implausible:blood_pressure", ()), ("rate:spo2", ("spo2",)), ("trend:weight_gain", ("body_weight",)),
    ("anomaly:spo2_pulse", ("spo2", "pulse_rate")), ("inactivity", ("motion", "door", "bed")),
    ("implausible:spo2", ()), ("missed:spo2", ()), ("device_offline", ()),
])
def test_each_rule_looks_at_its_signs(rule: str, signs: tuple[str, ...]) -> None:
    assert looks_at(rule) == signs


def test_an_alert_about_another_sign_catches_nothing_and_is_no_false_alarm() -> None:
    unrelated = alert(HF.crisis - 72 * H, rule="threshold:blood_glucose")
    related = alert(HF.crisis - 12 * H, rule="anomaly:pulse_rate")
    (found,) = match([HF], [unrelated, related])
    assert found.first == related and found.lead_h == 12.0
    assert match([HF], [unrelated], any_sign=True)[0].first == unrelated
    assert non_actionable([unrelated], [HF]) == []
