"""Errors raised by the anomaly package."""

from core.errors import InvalidInput


class InvalidNabInput(InvalidInput):
    """A results file or labels file that cannot be scored as it stands; the message names it."""

    code = "invalid_nab_input"
