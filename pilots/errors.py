"""Pilot errors; api/problems.py maps their bases to statuses."""

from core.errors import Conflict, InvalidInput, NotFound, TelecareError


class PilotNotFound(NotFound):
    """No such pilot, or one the caller does not lead (the same answer: ids cannot be probed)."""

    code = "pilot_not_found"


class EnrolmentNotFound(NotFound):
    code = "enrolment_not_found"


class InvalidPilot(InvalidInput):
    code = "invalid_pilot"


class PilotConflict(Conflict):
    """A name already taken, or an enrolment overlapping one the citizen already has."""

    code = "pilot_conflict"


class PseudonymKeyMissing(TelecareError):
    """No pseudonym key is configured: aggregates cannot be shown."""

    code = "pseudonym_key_missing"


class LeadNotFound(NotFound):
    code = "user_not_found"


class InvalidLead(InvalidInput):
    """Only a user with the role project_lead leads a pilot."""

    code = "invalid_user"
