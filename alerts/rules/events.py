"""Event rules: the emergency button (always red, at once, never held) and questionnaire answers
from the home screen mapped to red / yellow / green by a small table."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from alerts.models import CitizenContext, EventView, Finding, Severity
from alerts.rules.common import finding_about

GREEN = "green"

# (questionnaire, question, answer) -> red / yellow / green. "*" matches any questionnaire.
# An answer not in the table is green: it raises nothing. Sources: the COPD and heart-failure
# action plans patients are given (more breathless than usual, new ankle swelling: call today;
# chest pain, new confusion: call now).
ANSWERS: Mapping[tuple[str, str, str], str] = {
    ("*", "more_breathless", "yes"): Severity.YELLOW.value,
    ("*", "more_breathless", "no"): GREEN,
    ("*", "more_sputum", "yes"): Severity.YELLOW.value,
    ("*", "swollen_ankles", "yes"): Severity.YELLOW.value,
    ("*", "feeling_unwell", "yes"): Severity.YELLOW.value,
    ("*", "chest_pain", "yes"): Severity.RED.value,
    ("*", "breathless_at_rest", "yes"): Severity.RED.value,
    ("*", "new_confusion", "yes"): Severity.RED.value,
    ("*", "fallen", "yes"): Severity.RED.value,
}


def _text(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return str(value).strip().lower()


def answer_colour(questionnaire: str, question: str, answer: Any) -> str:
    """red, yellow or green for one answer (green when the table does not know it)."""
    key = (_text(questionnaire), _text(question), _text(answer))
    return ANSWERS.get(key, ANSWERS.get(("*", key[1], key[2]), GREEN))


def emergency(event: EventView, ctx: CitizenContext, now: datetime) -> Finding:
    """A press of the emergency button: red, never held. An old press (it reached us late)
    is still red but says it is old and is not pushed as current."""
    return finding_about(event, ctx, now, rule="emergency_button", severity=Severity.RED,
                         summary="Emergency button pressed", holdable=False,
                         explanation={"kind": event.kind})


def questionnaire(event: EventView, ctx: CitizenContext, now: datetime) -> Finding | None:
    """The finding of a red or yellow answer; None for green."""
    data = event.data
    colour = answer_colour(str(data.get("questionnaire", "")), str(data.get("question", "")),
                           data.get("answer"))
    if colour == GREEN:
        return None
    return finding_about(
        event, ctx, now, rule="questionnaire", severity=Severity(colour),
        summary=f"Answered {_text(data.get('answer'))!r} to {data.get('question')!r}",
        explanation={"questionnaire": data.get("questionnaire"), "question": data.get("question"),
                     "answer": data.get("answer"), "colour": colour})


def evaluate(ctx: CitizenContext, now: datetime) -> list[Finding]:
    """Findings for the context's new events."""
    findings = []
    for event in ctx.new_events:
        if event.kind == "emergency_button":
            findings.append(emergency(event, ctx, now))
        elif event.kind == "questionnaire_answer":
            finding = questionnaire(event, ctx, now)
            if finding is not None:
                findings.append(finding)
    return findings
