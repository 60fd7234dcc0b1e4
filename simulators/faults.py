"""Device faults the fleet injects on demand, planned like everything else: keyed by device
and day, so a run of any start and length sees the same outages."""

from __future__ import annotations

import math
import random
from datetime import date, datetime, timedelta

from simulators.streams import at_local, day_number, keyed

FAULTS = ("duplicates", "offline", "clock_skew", "low_battery", "malformed", "sensor_fault")

OUTAGE_PER_DAY = 0.06
DUPLICATE_SHARE = 0.1  # of send attempts, when "duplicates" is on
MALFORMED_SHARE = 0.05  # of a device's actions, when "malformed" is on
SENSOR_FAULT_SHARE = 0.02  # of readings, when "sensor_fault" is on


def outages(seed: int, device_id: str, day: date) -> list[tuple[datetime, datetime]]:
    """When the device loses its connection on local day `day`: mostly short (a router
    restart), sometimes for a day or more (unplugged, no mobile signal)."""
    rng = keyed(seed, device_id, "outage", day_number(day))
    if rng.random() >= OUTAGE_PER_DAY:
        return []
    start = at_local(day, rng.uniform(0, 24))
    hours = min(36.0, max(5 / 60, rng.lognormvariate(math.log(1.5), 1.2)))
    return [(start, start + timedelta(hours=hours))]


def clock_skews(device_ids: list[str]) -> dict[str, timedelta]:
    """A clock reset days ahead (say, after a battery change): what it stamps later than the
    server's now is refused; and a clock hours behind: stored by the time it claims, late."""
    skews = {}
    if len(device_ids) > 2:
        skews[device_ids[0]] = timedelta(days=2)
        skews[device_ids[2]] = -timedelta(hours=3)
    return skews


def sensor_glitch(device_kind: str, rng: random.Random) -> dict[str, float] | None:
    """Values a faulty or misused sensor shows, outside what a body can measure: a probe off
    the finger, a bag on the scale, the room's temperature, a cuff error, a bad strip."""
    if device_kind == "pulse_oximeter":
        return {"spo2": float(rng.randint(20, 45)), "pulse": float(rng.choice((0, 5, 310)))}
    if device_kind == "scale":
        return {"weight": round(rng.uniform(1.0, 8.0), 1)}
    if device_kind == "thermometer":
        return {"temperature": round(rng.uniform(18.0, 23.5), 1)}
    if device_kind == "bp_monitor":
        return {"systolic": float(rng.randint(305, 320)), "diastolic": float(rng.randint(205, 240)),
                "pulse": float(rng.randint(0, 15))}
    if device_kind == "glucometer":
        return {"glucose": round(rng.uniform(0.1, 0.4), 1)}
    return None
