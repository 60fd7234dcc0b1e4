"""How far a device's clock is from ours, judged from one message. Pure.

A device stamps the times it sends (`sent_at`, a status's `reported_at`) with its own clock;
we stamp our receive time. Their difference is the clock offset minus the time the message
spent in transit, which is at least zero and at most `max_transit` (how long the message can
have waited at the broker or for Telecare). So the offset lies in
[device_time - received, device_time - received + max_transit]. The clock is suspect only when
that whole range is further from zero than the tolerance: a late message from a good clock
never makes it suspect, whatever Telecare's own backlog."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)
_ANY_OFFSET = timedelta(days=10**6)  # beyond the calendar: any true time is possible


@dataclass(frozen=True, slots=True)
class ClockCheck:
    low: timedelta  # the device clock is at least this far ahead of ours (negative: behind)
    high: timedelta  # and at most this far
    suspect: bool

    @property
    def offset_s(self) -> float:
        """The offset within the possible range that is closest to zero, in seconds."""
        if self.low > timedelta(0):
            return self.low.total_seconds()
        if self.high < timedelta(0):
            return self.high.total_seconds()
        return 0.0

    def true_time_range(self, device_time: datetime) -> tuple[datetime, datetime]:
        """When something the device stamped `device_time` can really have happened, if its
        clock kept the same offset since. Clamped to the calendar: a clock far enough off
        (measured in 2000, sent in 9999) would otherwise leave it."""
        return _shift(device_time, -self.high), _shift(device_time, -self.low)


def wrong_clock() -> ClockCheck:
    """A clock known to be wrong by an unknown amount (a send time that cannot be right)."""
    return ClockCheck(-_ANY_OFFSET, _ANY_OFFSET, suspect=True)


def remembered(offset_s: float, tolerance: timedelta) -> ClockCheck:
    """A clock judged suspect earlier, about `offset_s` off, for a message that cannot show
    its clock now (no send time): the true offset may lie anywhere up to twice as far."""
    offset = timedelta(seconds=offset_s)
    return ClockCheck(offset - abs(offset) - tolerance, offset + abs(offset) + tolerance,
                      suspect=True)


def check_clock(device_time: datetime, received_at: datetime, max_transit: timedelta,
                tolerance: timedelta) -> ClockCheck:
    """The range the device clock's offset lies in, and whether it is beyond `tolerance`."""
    low = device_time - received_at
    high = low + max_transit
    return ClockCheck(low, high, suspect=low > tolerance or high < -tolerance)


def _shift(moment: datetime, by: timedelta) -> datetime:
    try:
        return moment + by
    except OverflowError:
        return _LATEST if by > timedelta(0) else _EARLIEST
