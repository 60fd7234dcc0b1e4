"""Escalation policies: who a red alert goes to when nobody acknowledges it, and when.

A policy is an ordered chain of steps. Each step's `after_s` counts from the moment the alert
started needing attention (opened red, worsened to red, or released from a hold), so a late
tick of the engine never shifts the later steps. A contact point is a role on the team, a
webhook, or the team's stream: escalation works before user accounts exist."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alerts.errors import InvalidPolicy

ContactKind = Literal["role", "webhook", "stream"]


class Contact(BaseModel):
    """Where an escalation step goes: a role on the team, a webhook id, or the team's stream."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ContactKind
    target: str = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _webhook_is_an_id(self) -> Contact:
        if self.kind == "webhook" and not self.target.isdigit():
            raise ValueError("a webhook contact's target is the webhook's id")
        return self

    def label(self) -> str:
        return f"{self.kind}:{self.target}"


class EscalationStep(BaseModel):
    """One step: after `after_s` seconds without acknowledgement, tell `contact`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    after_s: int = Field(gt=0, le=7 * 24 * 3600)
    contact: Contact


class EscalationPolicy(BaseModel):
    """An ordered chain of steps, `after_s` strictly increasing."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    steps: tuple[EscalationStep, ...] = Field(min_length=1, max_length=10)

    @model_validator(mode="after")
    def _increasing(self) -> EscalationPolicy:
        times = [step.after_s for step in self.steps]
        if any(later <= earlier for earlier, later in zip(times, times[1:], strict=False)):
            raise ValueError("steps' after_s must increase strictly")
        return self

    def as_json(self) -> list[dict[str, Any]]:
        """The steps as stored in escalation_policies.steps."""
        return [step.model_dump() for step in self.steps]


# Nurse on duty after 5 minutes without acknowledgement, the on-call nurse after 15, the team
# lead after 30: a red alert is meant to be looked at now (docs/alerts.md).
DEFAULT_POLICY = EscalationPolicy(steps=(
    EscalationStep(after_s=300, contact=Contact(kind="role", target="nurse_on_duty")),
    EscalationStep(after_s=900, contact=Contact(kind="role", target="on_call_nurse")),
    EscalationStep(after_s=1800, contact=Contact(kind="role", target="team_lead")),
))


def parse_policy(steps: Sequence[Mapping[str, Any]] | Any) -> EscalationPolicy:
    """A policy from its JSON steps; InvalidPolicy when they are not a valid chain."""
    try:
        return EscalationPolicy.model_validate({"steps": steps})
    except ValidationError as exc:
        raise InvalidPolicy(_first_error(exc)) from None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])
