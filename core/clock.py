"""The clock is passed in: domain code never asks the system for the time itself."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """Current UTC time; the one place that reads the wall clock."""
    return datetime.now(UTC)


# Bounds of "any time" for queries over intervals (within PostgreSQL's timestamptz range).
FAR_PAST = datetime(1, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)
