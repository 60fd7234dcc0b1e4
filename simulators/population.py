"""Who the simulated citizens are: conditions, devices, physiology and deterioration episodes.

Everything here is a pure function of (citizen count, seed), so a fleet is reproducible."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

CONDITIONS = ("copd", "heart_failure", "diabetes", "hypertension", "frail_alone")

# What a municipality hands out per condition: device kind -> daily schedule (hours of day).
# Event sensors use an empty schedule: they fire on the citizen's activity instead.
KIT: dict[str, dict[str, tuple[float, ...]]] = {
    "copd": {"pulse_oximeter": (8.5, 19.0), "thermometer": (8.6,), "home_screen": (9.0,)},
    "heart_failure": {"scale": (7.5,), "bp_monitor": (7.7,), "home_screen": (9.0,)},
    "diabetes": {"glucometer": (7.0, 12.5, 18.5), "scale": (7.5,)},
    "hypertension": {"bp_monitor": (8.0, 20.0)},
    "frail_alone": {"emergency_button": (), "motion_sensor": (), "door_sensor": (),
                    "bed_sensor": ()},
}
MODELS = {
    "pulse_oximeter": "Nonin 3230", "thermometer": "Braun ThermoScan 7", "home_screen": "Tunstall myMobile",
    "scale": "A&D UC-352BLE", "bp_monitor": "A&D UA-651BLE", "glucometer": "Contour Next One",
    "emergency_button": "Tunstall MyAmie", "motion_sensor": "Tunstall PIR", "door_sensor": "Tunstall UDS",
    "bed_sensor": "Tunstall Bed Occupancy",
}
SHORT = {"pulse_oximeter": "ox", "thermometer": "th", "home_screen": "scr", "scale": "sc",
         "bp_monitor": "bp", "glucometer": "gl", "emergency_button": "btn", "motion_sensor": "pir",
         "door_sensor": "door", "bed_sensor": "bed"}
EPISODES = {
    "heart_failure": ("weight_gain", timedelta(days=4)),
    "copd": ("exacerbation", timedelta(days=3)),
    "diabetes": ("hypoglycaemia", timedelta(days=1)),
    "hypertension": ("bp_rise", timedelta(days=1)),
    "frail_alone": ("inactivity", timedelta(hours=14)),
}


@dataclass(frozen=True)
class DeviceSpec:
    id: str
    kind: str
    model: str
    serial: str
    schedule: tuple[float, ...]


@dataclass(frozen=True)
class Episode:
    """Ground truth of a deterioration the alert rules should find."""

    citizen: str
    condition: str
    kind: str
    start: datetime
    end: datetime

    def progress(self, at: datetime) -> float:
        """0 before, ramping to 1 at the end, 0 after."""
        if not self.start <= at < self.end:
            return 0.0
        return (at - self.start) / (self.end - self.start)


@dataclass(frozen=True)
class Physiology:
    """A person's own baseline; values vary around it with a daily rhythm and noise."""

    systolic: float
    pulse: float
    spo2: float
    weight: float
    temperature: float
    glucose: float


@dataclass(frozen=True)
class CitizenSpec:
    key: str
    display_name: str
    condition: str
    devices: tuple[DeviceSpec, ...]
    body: Physiology
    episodes: list[Episode] = field(default_factory=list, compare=False)


_FIRST = ("Karen", "Jens", "Birthe", "Poul", "Inger", "Erik", "Hanne", "Ole", "Lis", "Bent",
          "Grethe", "Henning", "Kirsten", "Svend", "Ruth", "Aage")
_LAST = ("Jensen", "Nielsen", "Hansen", "Pedersen", "Andersen", "Christensen", "Larsen",
         "Sørensen", "Rasmussen", "Jørgensen")


def build_fleet(citizens: int, seed: int, prefix: str = "sim") -> list[CitizenSpec]:
    """`citizens` simulated people with their kit; conditions spread evenly, seed-determined."""
    rng = random.Random(seed)
    fleet = []
    for i in range(citizens):
        condition = CONDITIONS[i % len(CONDITIONS)]
        key = f"{prefix}{i:04d}"
        devices = tuple(
            DeviceSpec(id=f"{key}-{SHORT[kind]}", kind=kind, model=MODELS[kind],
                       serial=f"{prefix.upper()}-{seed}-{i:04d}-{SHORT[kind].upper()}",
                       schedule=schedule)
            for kind, schedule in KIT[condition].items())
        body = Physiology(
            systolic=rng.gauss(148 if condition == "hypertension" else 128, 10),
            pulse=rng.gauss(74, 7),
            spo2=min(99.0, rng.gauss(93 if condition == "copd" else 97, 1.0)),
            weight=rng.gauss(78, 13),
            temperature=rng.gauss(36.7, 0.15),
            glucose=rng.gauss(7.5, 1.2),
        )
        fleet.append(CitizenSpec(key=key, display_name=f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
                                 condition=condition, devices=devices, body=body))
    return fleet


def plan_episodes(fleet: list[CitizenSpec], start: datetime, end: datetime, seed: int,
                  share: float = 0.5) -> list[Episode]:
    """Give about `share` of the citizens one deterioration within [start, end)."""
    rng = random.Random(seed * 7919 + 1)
    planned = []
    for citizen in fleet:
        kind, length = EPISODES[citizen.condition]
        room = (end - start) - length - timedelta(days=1)
        if room <= timedelta(0) or rng.random() >= share:
            continue
        begin = start + timedelta(days=1) + room * rng.random()
        episode = Episode(citizen.key, citizen.condition, kind, begin, begin + length)
        citizen.episodes.append(episode)
        planned.append(episode)
    return planned


def _rhythm(at: datetime, peak_hour: float) -> float:
    """-1..1 over the day, highest at `peak_hour` (UTC, near enough for a simulation)."""
    hour = at.hour + at.minute / 60
    return math.cos((hour - peak_hour) / 24 * 2 * math.pi)


def measure(citizen: CitizenSpec, device_kind: str, at: datetime,
            rng: random.Random) -> tuple[str, dict[str, float]] | None:
    """What the citizen's device shows at `at`: (measurement type, values), or None."""
    body = citizen.body
    worse = {e.kind: e.progress(at) for e in citizen.episodes}
    if device_kind == "bp_monitor":
        systolic = (body.systolic + 7 * _rhythm(at, 9) + rng.gauss(0, 6)
                    + 40 * (worse.get("bp_rise", 0) > 0))
        pulse = body.pulse + 4 * _rhythm(at, 14) + rng.gauss(0, 4)
        return "blood_pressure", {"systolic": round(systolic), "diastolic": round(systolic * 0.62
                                  + rng.gauss(0, 4)), "pulse": round(pulse)}
    if device_kind == "pulse_oximeter":
        drop = worse.get("exacerbation", 0)
        spo2 = min(100.0, body.spo2 - 4 * drop + rng.gauss(0, 0.8))
        return "pulse_oximetry", {"spo2": round(spo2),
                                  "pulse": round(body.pulse + 15 * drop + rng.gauss(0, 4))}
    if device_kind == "scale":
        gain = 2.5 * worse.get("weight_gain", 0)
        return "body_weight", {"weight": round(body.weight + gain + rng.gauss(0, 0.3), 1)}
    if device_kind == "thermometer":
        return "body_temperature", {"temperature": round(
            body.temperature + 0.25 * _rhythm(at, 18) + rng.gauss(0, 0.12), 1)}
    if device_kind == "glucometer":
        if worse.get("hypoglycaemia", 0) > 0:
            return "blood_glucose", {"glucose": round(rng.uniform(2.6, 3.6), 1)}
        meal = 1.5 if at.hour in (12, 13, 18, 19) else 0.0
        return "blood_glucose", {"glucose": round(max(3.9, body.glucose + meal
                                                      + rng.gauss(0, 0.8)), 1)}
    return None
