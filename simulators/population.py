"""Who the simulated citizens are: conditions, devices, physiology, habits and episodes.

Everything here is a pure function of (citizen count, seed) and of the times passed in: each
citizen is drawn from her own keyed generator (so adding citizens changes nobody), her values
drift from day to day as an AR(1) series keyed by the day, and her episodes come from a point
process anchored at a fixed epoch (simulators.episodes). What she does on a day — which
measurements she takes or skips, when she gets up — is keyed by that day."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache

from simulators.episodes import Episode, episodes_between
from simulators.streams import ar1, at_local, day_number, keyed, local_date, local_hour, rhythm

__all__ = ["CONDITIONS", "CitizenSpec", "DeviceSpec", "Episode", "Habits", "Physiology",
           "build_fleet", "day_plan", "measure", "plan_episodes", "screen_answer"]

CONDITIONS = ("copd", "heart_failure", "diabetes", "hypertension", "frail_alone")

# What a municipality hands out per condition: device kind -> daily schedule (hours on the
# citizen's local wall clock). Event sensors have an empty schedule: they follow her activity.
KIT: dict[str, dict[str, tuple[float, ...]]] = {
    "copd": {"pulse_oximeter": (8.5, 19.0), "thermometer": (8.6,), "home_screen": (9.0,)},
    "heart_failure": {"scale": (7.5,), "bp_monitor": (7.7,), "home_screen": (9.0,)},
    "diabetes": {"glucometer": (7.0, 12.5, 18.5), "scale": (7.5,)},
    "hypertension": {"bp_monitor": (8.0, 20.0)},
    "frail_alone": {"emergency_button": (), "motion_sensor": (), "door_sensor": (),
                    "bed_sensor": ()},
}


@dataclass(frozen=True)
class Accuracy:
    """A device model's error for one value: bias and spread, absolute or as a fraction."""

    bias: float = 0.0
    sd: float = 0.0
    relative: bool = False


# Models in use per kind and their error per wire value name. The figures follow the
# accuracy the makers and validation studies report (e.g. a cheap fingertip oximeter reads
# high with twice the spread of a clinical one; glucometers meet ISO 15197's +-15 %).
DEVICE_MODELS: dict[str, dict[str, dict[str, Accuracy]]] = {
    "pulse_oximeter": {
        "Nonin 3230": {"spo2": Accuracy(0.0, 1.0), "pulse": Accuracy(0.0, 1.5)},
        "Contec CMS50D-BT": {"spo2": Accuracy(1.0, 2.0), "pulse": Accuracy(0.0, 3.0)}},
    "thermometer": {
        "Braun ThermoScan 7": {"temperature": Accuracy(0.0, 0.12)},
        "Microlife NC 150": {"temperature": Accuracy(-0.2, 0.3)}},
    "scale": {
        "A&D UC-352BLE": {"weight": Accuracy(0.0, 0.1)},
        "Beurer BF 600": {"weight": Accuracy(0.3, 0.35)}},
    "bp_monitor": {
        "A&D UA-651BLE": {"systolic": Accuracy(0.0, 4.0), "diastolic": Accuracy(0.0, 3.0),
                          "pulse": Accuracy(0.0, 2.0)},
        "Omron M7 Intelli IT": {"systolic": Accuracy(-3.0, 5.5), "diastolic": Accuracy(2.0, 4.0),
                                "pulse": Accuracy(0.0, 2.5)}},
    "glucometer": {
        "Contour Next One": {"glucose": Accuracy(0.0, 0.04, relative=True)},
        "Accu-Chek Guide": {"glucose": Accuracy(0.03, 0.07, relative=True)}},
    "home_screen": {"Tunstall myMobile": {}},
    "emergency_button": {"Tunstall MyAmie": {}},
    "motion_sensor": {"Tunstall PIR": {}},
    "door_sensor": {"Tunstall UDS": {}},
    "bed_sensor": {"Tunstall Bed Occupancy": {}},
}
SHORT = {"pulse_oximeter": "ox", "thermometer": "th", "home_screen": "scr", "scale": "sc",
         "bp_monitor": "bp", "glucometer": "gl", "emergency_button": "btn", "motion_sensor": "pir",
         "door_sensor": "door", "bed_sensor": "bed"}

# What each measuring kind reports: measurement type and wire value name -> metric code.
READS: dict[str, tuple[str, dict[str, str]]] = {
    "bp_monitor": ("blood_pressure", {"systolic": "systolic_bp", "diastolic": "diastolic_bp",
                                      "pulse": "pulse_rate"}),
    "pulse_oximeter": ("pulse_oximetry", {"spo2": "spo2", "pulse": "pulse_rate"}),
    "scale": ("body_weight", {"weight": "body_weight"}),
    "thermometer": ("body_temperature", {"temperature": "body_temperature"}),
    "glucometer": ("blood_glucose", {"glucose": "blood_glucose"}),
}
DECIMALS = {"systolic": 0, "diastolic": 0, "pulse": 0, "spo2": 0, "weight": 1,
            "temperature": 1, "glucose": 1}
# Day-to-day drift of each metric around the baseline: (daily AR(1) coefficient, sd).
DRIFT = {"systolic_bp": (0.8, 7.0), "diastolic_bp": (0.7, 3.5), "pulse_rate": (0.6, 3.5),
         "spo2": (0.8, 1.0), "body_weight": (0.9, 0.6), "body_temperature": (0.4, 0.12),
         "blood_glucose": (0.6, 0.8)}
# Variation within a day: (amplitude, peak hour on the local clock) and the spread of one
# reading around it (before device error).
RHYTHM = {"systolic_bp": (6.0, 10.0), "diastolic_bp": (4.0, 10.0), "pulse_rate": (4.0, 14.0),
          "spo2": (0.4, 14.0), "body_weight": (0.3, 20.0), "body_temperature": (0.3, 18.0)}
WITHIN = {"systolic_bp": 5.0, "diastolic_bp": 3.5, "spo2": 0.6, "body_weight": 0.15,
          "body_temperature": 0.1}
GLUCOSE_WITHIN = 0.1  # glucose varies in proportion to its level
MEALS = (7.5, 12.0, 18.0)


@dataclass(frozen=True)
class DeviceSpec:
    id: str
    kind: str
    model: str
    serial: str
    schedule: tuple[float, ...]


@dataclass(frozen=True)
class Physiology:
    """A person's own baseline, which need not be a textbook one (a COPD citizen may live at
    SpO2 89, a citizen in atrial fibrillation has an irregular pulse)."""

    systolic: float
    diastolic: float
    pulse: float
    pulse_sd: float
    spo2: float
    weight: float
    temperature: float
    glucose: float

    def metrics(self) -> dict[str, float]:
        """The baseline by metric code."""
        return {"systolic_bp": self.systolic, "diastolic_bp": self.diastolic,
                "pulse_rate": self.pulse, "spo2": self.spo2, "body_weight": self.weight,
                "body_temperature": self.temperature, "blood_glucose": self.glucose}


@dataclass(frozen=True)
class Habits:
    """How faithfully the citizen measures: share of scheduled measurements taken, share
    repeated within minutes, breaks of days per 30 days, and when in the day she does it."""

    adherence: float
    double_rate: float
    break_rate: float
    offset_h: float
    jitter_min: float


@dataclass(frozen=True)
class CitizenSpec:
    key: str
    display_name: str
    condition: str
    devices: tuple[DeviceSpec, ...]
    body: Physiology
    habits: Habits
    stream: str  # what every keyed draw about this citizen starts from
    episodes: list[Episode] = field(default_factory=list, compare=False)
    # Scales the day-to-day drift, the spread of one reading and the device error (not the
    # bias, the rhythm or the episodes): 2.0 is a noisier population of the same people, to
    # see whether alerting tuned on ordinary noise over-fits it (`telecare evaluate --noise`).
    noise: float = 1.0

    def device(self, kind: str) -> DeviceSpec | None:
        return next((d for d in self.devices if d.kind == kind), None)

    def away(self, at: datetime) -> bool:
        """In hospital (or, for inactivity, lying still): nothing measured, nothing moves."""
        return any(e.away(at) for e in self.episodes)


_FIRST = ("Karen", "Jens", "Birthe", "Poul", "Inger", "Erik", "Hanne", "Ole", "Lis", "Bent",
          "Grethe", "Henning", "Kirsten", "Svend", "Ruth", "Aage")
_LAST = ("Jensen", "Nielsen", "Hansen", "Pedersen", "Andersen", "Christensen", "Larsen",
         "Sørensen", "Rasmussen", "Jørgensen")


def _body(rng: random.Random, condition: str, unusual: bool) -> Physiology:
    """A baseline for the condition; `unusual` citizens live outside the textbook bands."""
    values = {"systolic": rng.gauss(128, 11), "pulse": rng.gauss(74, 7), "pulse_sd": 3.5,
              "spo2": min(98.5, rng.gauss(96.8, 0.9)), "weight": rng.gauss(78, 13),
              "temperature": rng.gauss(36.6, 0.18), "glucose": rng.gauss(5.8, 0.5)}
    draw = rng.random()
    if condition == "copd":
        values["spo2"] = 87.5 + 2.5 * draw if unusual else min(97.0, max(90.5, rng.gauss(93.5, 1.4)))
        values["pulse"] += 6
    elif condition == "heart_failure":
        values["weight"] = rng.gauss(86, 15)
        values["systolic"] = rng.gauss(114, 12)
        # Atrial fibrillation: faster and irregular; otherwise beta-blocked and slow.
        values["pulse"], values["pulse_sd"] = ((82 + 8 * draw, 11.0) if unusual
                                               else (rng.gauss(63, 5), 3.0))
    elif condition == "diabetes":
        values["glucose"] = 10.0 + 1.5 * draw if unusual else rng.gauss(7.8, 1.0)
        values["weight"] = rng.gauss(92, 16)
    elif condition == "hypertension":
        values["systolic"] = 158 + 10 * draw if unusual else rng.gauss(146, 7)
    elif condition == "frail_alone":
        values["weight"] = rng.gauss(61, 9)
        values["systolic"] = 98 + 8 * draw if unusual else rng.gauss(122, 12)
        values["temperature"] = rng.gauss(36.3, 0.2)
    values["diastolic"] = values["systolic"] * 0.6 + rng.gauss(0, 4)
    return Physiology(**{k: round(v, 2) for k, v in values.items()})


def _habits(rng: random.Random) -> Habits:
    return Habits(adherence=round(min(0.98, max(0.35, rng.betavariate(7.0, 1.8))), 3),
                  double_rate=round(rng.uniform(0.0, 0.12), 3),
                  break_rate=round(min(1.5, rng.expovariate(1 / 0.4)), 3),
                  offset_h=round(rng.gauss(0, 0.6), 2),
                  jitter_min=round(rng.uniform(5, 40), 1))


def _citizen(i: int, seed: int, prefix: str, noise: float) -> CitizenSpec:
    condition = CONDITIONS[i % len(CONDITIONS)]
    key = f"{prefix}{i:04d}"
    rng = keyed(seed, "citizen", i)
    devices = []
    for kind, schedule in KIT[condition].items():
        model = keyed(seed, key, kind).choice(sorted(DEVICE_MODELS[kind]))
        devices.append(DeviceSpec(id=f"{key}-{SHORT[kind]}", kind=kind, model=model,
                                  serial=f"{prefix.upper()}-{seed}-{i:04d}-{SHORT[kind].upper()}",
                                  schedule=schedule))
    # The first citizen of each condition, and every third after, is an unusual one.
    unusual = (i // len(CONDITIONS)) % 3 == 0
    body = _body(rng, condition, unusual)
    return CitizenSpec(key=key, display_name=f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
                       condition=condition, devices=tuple(devices), body=body,
                       habits=_habits(rng), stream=f"{seed}:{key}", noise=noise)


def build_fleet(citizens: int, seed: int, prefix: str = "sim",
                noise: float = 1.0) -> list[CitizenSpec]:
    """`citizens` simulated people with their kit; conditions spread evenly, seed-determined.
    `noise` scales their measurement noise (CitizenSpec.noise); the draws stay the same."""
    if noise <= 0:
        raise ValueError("noise is a positive factor")
    return [_citizen(i, seed, prefix, noise) for i in range(citizens)]


def plan_episodes(fleet: list[CitizenSpec], start: datetime, end: datetime,
                  seed: int) -> list[Episode]:
    """Add to each citizen the episodes that touch [start, end) and she does not have yet;
    returns those. Planning consecutive windows gives what planning their union would."""
    planned = []
    for citizen in fleet:
        known = {e.id for e in citizen.episodes}
        for episode in episodes_between(seed, citizen.key, citizen.condition,
                                        citizen.body.metrics(), start, end):
            if episode.id not in known:
                citizen.episodes.append(episode)
                planned.append(episode)
    return planned


def true_value(citizen: CitizenSpec, metric: str, at: datetime) -> float:
    """The citizen's physiology at `at`, before the spread of a single reading and device
    error: baseline + day's drift + daily rhythm + what her episodes change."""
    phi, sd = DRIFT[metric]
    value = citizen.body.metrics()[metric] + ar1(f"{citizen.stream}:{metric}",
                                                 day_number(local_date(at)), phi,
                                                 sd * citizen.noise)
    if metric in RHYTHM:
        amplitude, peak = RHYTHM[metric]
        value += amplitude * rhythm(at, peak)
    if metric == "blood_glucose":
        hour = local_hour(at)
        value += sum(2.2 * math.exp(-(((hour - meal - 1.0) / 0.8) ** 2))
                     for meal in MEALS if hour > meal)
        lows = [float(e.notes["glucose"]) for e in citizen.episodes
                if e.kind == "hypoglycaemia" and e.active(at)]
        if lows:
            return min(lows)
    return value + sum(e.change.get(metric, 0.0) * e.severity(at) for e in citizen.episodes)


def _shown(value: float, accuracy: Accuracy | None, rng: random.Random,
           noise: float = 1.0) -> float:
    if accuracy is None:
        return value
    if accuracy.relative:
        return value * (1 + accuracy.bias + rng.gauss(0, accuracy.sd * noise))
    return value + accuracy.bias + rng.gauss(0, accuracy.sd * noise)


def measure(citizen: CitizenSpec, device_kind: str, at: datetime, rng: random.Random,
            model: str | None = None) -> tuple[str, dict[str, float]] | None:
    """What the citizen's device (or one of `model`) shows at `at`: (measurement type,
    values), or None for a device that does not measure."""
    if device_kind not in READS:
        return None
    device = citizen.device(device_kind)
    errors = DEVICE_MODELS[device_kind].get(model or (device.model if device else ""), {})
    mtype, names = READS[device_kind]
    values = {}
    for name, metric in names.items():
        true = true_value(citizen, metric, at)
        if metric == "blood_glucose":
            # A hypo's planned low is the true value at that moment; only the meter errs.
            if not any(e.kind == "hypoglycaemia" and e.active(at) for e in citizen.episodes):
                true *= 1 + rng.gauss(0, GLUCOSE_WITHIN * citizen.noise)
        else:
            true += rng.gauss(0, citizen.noise * (citizen.body.pulse_sd if metric == "pulse_rate"
                                                  else WITHIN[metric]))
        shown = _shown(true, errors.get(name), rng, citizen.noise)
        if name == "spo2":
            shown = min(100.0, shown)
        values[name] = round(max(0.0, shown), DECIMALS[name])
    return mtype, values


def screen_answer(citizen: CitizenSpec, at: datetime, rng: random.Random) -> str:
    """The daily question "more breathless than usual?": mostly no, yes as an episode grows."""
    worst = max((e.severity(at) for e in citizen.episodes if "questionnaire_answer" in e.metrics),
                default=0.0)
    return "yes" if rng.random() < 0.04 + 0.85 * worst else "no"


@lru_cache(maxsize=1 << 14)
def _break_length(stream: str, day: int, rate: float) -> int:
    rng = keyed(stream, "break", day)
    return rng.randint(2, 10) if rng.random() < rate / 30 else 0


def on_break(citizen: CitizenSpec, day: date) -> bool:
    """Whether the citizen has stopped measuring for some days (holiday, fed up, unwell)."""
    n = day_number(day)
    return any(_break_length(citizen.stream, d, citizen.habits.break_rate) > n - d
               for d in range(n - 10, n + 1))


Planned = tuple[datetime, str]


def _measurements(citizen: CitizenSpec, device: DeviceSpec, day: date) -> list[Planned]:
    habits = citizen.habits
    rng = keyed(citizen.stream, device.id, "day", day_number(day))
    action = "answer" if device.kind == "home_screen" else "measure"
    weekend = day.weekday() >= 5
    planned: list[Planned] = []
    for hour in device.schedule:
        take, jitter, again, gap = rng.random(), rng.gauss(0, 1), rng.random(), rng.uniform(60, 420)
        if take >= habits.adherence * (0.9 if weekend else 1.0):
            continue
        at = at_local(day, hour + habits.offset_h + jitter * habits.jitter_min / 60)
        planned.append((at, action))
        if again < habits.double_rate:
            planned.append((at + timedelta(seconds=round(gap)), action))
    if on_break(citizen, day):
        planned = []
    if device.kind == "glucometer":
        planned = _with_hypoglycaemia(citizen, day, planned, action)
    return sorted(p for p in planned if not citizen.away(p[0]))


def _with_hypoglycaemia(citizen: CitizenSpec, day: date, planned: list[Planned],
                        action: str) -> list[Planned]:
    """Symptoms make her measure within minutes of a hypo (instead of at the usual time, if
    that was near) and again after treating it: one low reading, then a normal one."""
    for episode in citizen.episodes:
        if episode.kind != "hypoglycaemia" or local_date(episode.onset) != day:
            continue
        near = (episode.onset - timedelta(minutes=30), episode.end + timedelta(minutes=15))
        planned = [p for p in planned if not near[0] <= p[0] < near[1]]
        extra = keyed(citizen.stream, episode.id)
        planned += [(episode.onset + timedelta(seconds=round(extra.uniform(60, 480))), action),
                    (episode.onset + timedelta(seconds=round(extra.uniform(900, 1500))), action)]
    return planned


@lru_cache(maxsize=1 << 12)
def _routine(stream: str, day: date, offset_h: float) -> tuple[Planned, ...]:
    """One day at home of a citizen living alone, as her sensors would see it."""
    rng = keyed(stream, "routine", day_number(day))
    wake = 7.0 + offset_h + rng.gauss(0, 0.4)
    sleep = 22.0 + offset_h + rng.gauss(0, 0.5)
    hours: list[tuple[float, str]] = [(wake, "bed_out"), (sleep, "bed_in")]
    for _ in range(rng.choice((0, 1, 1, 2))):  # to the bathroom at night
        night = rng.uniform(0.5, wake - 0.5)
        hours += [(night, "bed_out"), (night + 0.02, "motion"),
                  (night + rng.uniform(0.08, 0.25), "bed_in")]
    at = wake + 0.03
    while at < sleep:
        hours.append((at, "motion"))
        at += rng.expovariate(1 / 0.5)
    for _ in range(rng.randint(1, 3)):  # home care, a neighbour, shopping
        visit = rng.uniform(wake + 1, sleep - 1)
        leave = visit + rng.uniform(0.25, 0.75)
        hours += [(visit, "door_open"), (visit + rng.uniform(5, 60) / 3600, "door_closed"),
                  (leave, "door_open"), (leave + rng.uniform(5, 60) / 3600, "door_closed")]
    if rng.random() < 0.015:
        hours.append((rng.uniform(wake, sleep), "button"))
    return tuple(sorted((at_local(day, h), action) for h, action in hours))


SENSES = {"motion_sensor": ("motion",), "door_sensor": ("door_open", "door_closed"),
          "bed_sensor": ("bed_in", "bed_out"), "emergency_button": ("button",)}


def _episode_events(episode: Episode) -> list[Planned]:
    """What the sensors see around an inactivity episode: a press if she managed one, and
    whoever finds her (or brings her home) coming through the door."""
    rng = keyed(episode.id, "events")
    events: list[Planned] = []
    if episode.notes.get("button_pressed"):
        events.append((episode.onset + timedelta(minutes=rng.uniform(1, 20)), "button"))
    for arrival in (episode.end, episode.away_until):
        if arrival is not None:
            events += [(arrival, "door_open"), (arrival + timedelta(seconds=30), "door_closed"),
                       (arrival + timedelta(minutes=2), "motion")]
    return events


def _activity(citizen: CitizenSpec, device: DeviceSpec, day: date) -> list[Planned]:
    kinds = SENSES.get(device.kind, ())
    quiet = [(e.onset, e.last) for e in citizen.episodes if e.kind == "inactivity"]
    events = [p for p in _routine(citizen.stream, day, citizen.habits.offset_h)
              if not any(begin <= p[0] < end for begin, end in quiet)]
    for episode in citizen.episodes:
        if episode.kind == "inactivity":
            events += [p for p in _episode_events(episode) if local_date(p[0]) == day]
    return sorted(p for p in events if p[1] in kinds)


def day_plan(citizen: CitizenSpec, device: DeviceSpec, day: date) -> list[Planned]:
    """What the device sees of the citizen on her local calendar day `day`, by time: its
    measurements ("measure", "answer") with skips, repeats and breaks, or its sensor events.
    Uses the episodes planned so far, so plan them first."""
    if device.schedule:
        return _measurements(citizen, device, day)
    return _activity(citizen, device, day)


def planned_between(citizen: CitizenSpec, device: DeviceSpec, start: datetime,
                    end: datetime) -> list[Planned]:
    """day_plan over every local day touching [start, end), cut to it."""
    day, last = local_date(start), local_date(end)
    planned: list[Planned] = []
    while day <= last:
        planned += [p for p in day_plan(citizen, device, day) if start <= p[0] < end]
        day += timedelta(days=1)
    return planned

