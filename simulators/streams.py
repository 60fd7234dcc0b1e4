"""Seeded randomness that depends only on what it is about, never on the order of calls.

A simulated citizen's weight on 3 March, whether she measures that morning, or whether an
exacerbation starts in some week, must come out the same whether a run starts on 1 January
or on 1 March, and whether it is replayed or live. So every draw is keyed: `keyed(seed,
"sim0003", "weight", 19000)` is its own generator, seeded through SHA-512 (Python's string
seeding), which neither PYTHONHASHSEED nor the call order changes."""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

# Citizens live in Denmark: their routine and their body clock follow Copenhagen wall time,
# which moves by an hour against UTC twice a year.
LOCAL = ZoneInfo("Europe/Copenhagen")
# Planning is anchored here, so a window of any start and length sees the same episodes.
EPOCH = datetime(2020, 1, 6, tzinfo=UTC)  # a Monday


def keyed(*parts: object) -> random.Random:
    """A generator that depends only on `parts`."""
    return random.Random(":".join(str(p) for p in parts))


@lru_cache(maxsize=1 << 17)
def _innovation(stream: str, day: int) -> float:
    return keyed(stream, day).gauss(0.0, 1.0)


@lru_cache(maxsize=1 << 16)
def ar1(stream: str, day: int, phi: float, sd: float) -> float:
    """Day `day` of a stationary AR(1) series x[d] = phi*x[d-1] + e[d] with standard
    deviation `sd`, written as its moving-average sum so that any day can be asked for alone
    (terms are dropped once phi**k < 1e-3, which changes the variance by less than 1e-6)."""
    if phi <= 0:
        return sd * _innovation(stream, day)
    terms = max(1, math.ceil(math.log(1e-3) / math.log(phi)))
    total = sum(phi ** k * _innovation(stream, day - k) for k in range(terms))
    return sd * math.sqrt(1 - phi * phi) * total


def local_date(at: datetime) -> date:
    """The citizen's calendar day at instant `at`."""
    return at.astimezone(LOCAL).date()


def day_number(day: date) -> int:
    """A day's index for keyed draws (days since 1970-01-01)."""
    return day.toordinal() - date(1970, 1, 1).toordinal()


def local_hour(at: datetime) -> float:
    """Hours since local midnight on the wall clock (DST-correct)."""
    wall = at.astimezone(LOCAL)
    return wall.hour + wall.minute / 60 + wall.second / 3600


def at_local(day: date, hours: float) -> datetime:
    """The UTC instant when a Copenhagen wall clock shows `hours` after midnight of `day`
    (whole seconds; a time in the spring-forward gap lands an hour later, as a clock set by
    hand would)."""
    wall = datetime.combine(day, time()) + timedelta(seconds=round(hours * 3600))
    return wall.replace(tzinfo=LOCAL).astimezone(UTC)


def rhythm(at: datetime, peak_hour: float) -> float:
    """-1..1 over the day, highest at `peak_hour` on the citizen's local wall clock."""
    return math.cos((local_hour(at) - peak_hour) / 24 * 2 * math.pi)
