"""Base of every domain error; packages subclass it and api/ maps classes to statuses."""


class TelecareError(Exception):
    """A domain error with a stable machine-readable code."""

    code = "telecare_error"


class NotFound(TelecareError):
    code = "not_found"


class Conflict(TelecareError):
    code = "conflict"


class InvalidInput(TelecareError):
    code = "invalid_input"
