"""Refusals the API itself makes: parameters that are each well formed but contradict each
other, which no parameter schema can express (the 422 description in the document names them)."""

from core.errors import InvalidInput, TelecareError


class EmptyRange(InvalidInput):
    code = "empty_range"


class TooManyBuckets(InvalidInput):
    code = "too_many_buckets"


class PeriodTooLong(InvalidInput):
    code = "period_too_long"


class NotCommitted(TelecareError):
    """The request's transaction could not commit (the audit record of a read among what it
    held), so its answer is not given."""

    code = "not_committed"
