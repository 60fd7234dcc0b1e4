"""Emergency button: always red, immediately, never held. Questionnaire answers by table."""

from __future__ import annotations

from datetime import timedelta

import pytest

from alerts.models import Severity
from alerts.rules import evaluate_new
from alerts.rules.events import answer_colour
from tests.alerts.test_rules_common import NOW, context, event


def test_emergency_button_is_red_and_current() -> None:
    press = event("emergency_button")
    (found,) = evaluate_new(context(new_events=(press,)), NOW)
    assert found.rule == "emergency_button" and found.severity is Severity.RED
    assert found.is_current and not found.held and found.occurrence == press.occurrence


def test_emergency_button_is_never_held_in_a_pause() -> None:
    ctx = context(("frail_alone",), new_events=(event("emergency_button"),),
                  pauses=((NOW - timedelta(days=1), None),))
    (found,) = evaluate_new(ctx, NOW)
    assert found.severity is Severity.RED and not found.held


def test_late_press_is_red_but_old() -> None:
    press = event("emergency_button", NOW - timedelta(hours=3), late=True, delay_cause="device")
    (found,) = evaluate_new(context(new_events=(press,)), NOW)
    assert found.severity is Severity.RED and not found.is_current


def _answer(question: str, answer: object) -> dict:
    return {"questionnaire": "daily-check", "question": question, "answer": answer}


@pytest.mark.parametrize(("question", "answer", "colour"), [
    ("more_breathless", "yes", "yellow"), ("more_breathless", "no", "green"),
    ("more_breathless", True, "yellow"), ("More_Breathless", " YES ", "yellow"),
    ("chest_pain", "yes", "red"), ("chest_pain", "no", "green"),
    ("new_confusion", "yes", "red"), ("unknown_question", "yes", "green"),
])
def test_answer_table(question: str, answer: object, colour: str) -> None:
    assert answer_colour("daily-check", question, answer) == colour


def test_questionnaire_findings_and_green_raises_nothing() -> None:
    yes = event("questionnaire_answer", seq=1, data=_answer("more_breathless", "yes"))
    no = event("questionnaire_answer", seq=2, data=_answer("more_breathless", "no"))
    pain = event("questionnaire_answer", seq=3, data=_answer("chest_pain", "yes"))
    found = evaluate_new(context(new_events=(yes, no, pain)), NOW)
    assert [(f.rule, f.severity, f.occurrence) for f in found] == [
        ("questionnaire", Severity.YELLOW, yes.occurrence),
        ("questionnaire", Severity.RED, pain.occurrence)]
    assert found[0].explanation["question"] == "more_breathless"


def test_questionnaire_answer_in_a_pause_is_held() -> None:
    yes = event("questionnaire_answer", data=_answer("more_breathless", "yes"))
    (found,) = evaluate_new(context(new_events=(yes,), pauses=((NOW - timedelta(hours=1), None),)), NOW)
    assert found.held


def test_motion_events_raise_nothing_when_new() -> None:
    assert evaluate_new(context(new_events=(event("motion"), event("door", data={"state": "open"}))),
                        NOW) == []
