"""Base of every domain error; packages subclass it and api/ maps classes to statuses."""

from collections.abc import Mapping


class TelecareError(Exception):
    """A domain error with a stable machine-readable code, and the HTTP headers its answer
    needs beyond the status (Retry-After, WWW-Authenticate), if any."""

    code = "telecare_error"
    headers: Mapping[str, str] | None = None


class NotFound(TelecareError):
    code = "not_found"


class Conflict(TelecareError):
    code = "conflict"


class InvalidInput(TelecareError):
    code = "invalid_input"
