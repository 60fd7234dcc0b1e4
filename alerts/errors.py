"""Errors raised by alerts, thresholds, plans, pauses, care teams and escalation policies."""

from core.errors import Conflict, InvalidInput, NotFound


class AlertNotFound(NotFound):
    code = "alert_not_found"


class AlertConflict(Conflict):
    """A transition the alert's state does not allow (resolving a resolved alert)."""

    code = "alert_conflict"


class InvalidOutcome(InvalidInput):
    code = "invalid_outcome"


class InvalidThresholds(InvalidInput):
    code = "invalid_thresholds"


class InvalidPolicy(InvalidInput):
    code = "invalid_escalation_policy"


class InvalidPlan(InvalidInput):
    code = "invalid_plan"


class PlanConflict(Conflict):
    """The citizen already follows the plan during part of the period."""

    code = "plan_conflict"


class PlanNotFound(NotFound):
    code = "plan_not_found"


class InvalidPause(InvalidInput):
    code = "invalid_pause"


class PauseNotFound(NotFound):
    code = "pause_not_found"


class TeamNotFound(NotFound):
    code = "care_team_not_found"


class TeamConflict(Conflict):
    code = "care_team_conflict"


class InvalidWebhook(InvalidInput):
    code = "invalid_webhook"


class WebhookNotFound(NotFound):
    code = "webhook_not_found"
