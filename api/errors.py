"""Refusals the API itself makes: parameters that are each well formed but contradict each
other, which no parameter schema can express (the 422 description in the document names them)."""

from core.errors import InvalidInput


class EmptyRange(InvalidInput):
    code = "empty_range"


class TooManyBuckets(InvalidInput):
    code = "too_many_buckets"


class PeriodTooLong(InvalidInput):
    code = "period_too_long"
