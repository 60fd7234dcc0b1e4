"""Deteriorations with the variety clinical reports describe, planned as a seeded point process.

Each citizen's episodes are a renewal process: after an episode and a quiet spell, the next one
starts after an exponential wait (so onsets are Poisson-like, at a rate personal to the
citizen: some are frequent exacerbators). The process is cut into blocks anchored at a fixed
epoch and each block is drawn from its own keyed generator, so any window — a two-day backfill,
a 90-day study, a live run extended day by day — sees the same episodes.

What the literature reports and the plans here follow:
- heart-failure decompensation: weight rises over days to two weeks before admission, by
  anything from nothing to several kilos (a good part of admissions show little or no gain);
  pulse rises a little; breathlessness is reported; about a third end in hospital.
- COPD exacerbation: a short prodrome, SpO2 falls by 1-8 points and pulse rises, fever in a
  minority, recovery over one to two weeks.
- hypoglycaemia: one low value among normal ones, measured because of symptoms and rechecked
  after treatment.
- inactivity of a frail citizen living alone (a fall, illness): every sensor quiet until someone
  comes; sometimes the emergency button is pressed, sometimes not.
- a blood-pressure rise (medication stopped), over days."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache

from simulators.streams import EPOCH, at_local, keyed, local_date

# Blocks are longer than any episode, so an episode can only overlap the block after its own.
BLOCK = timedelta(days=56)
QUIET = timedelta(days=4)


@dataclass(frozen=True)
class Episode:
    """Ground truth of a deterioration the alert rules should find.

    `change` is the change in the citizen's true physiology at the crisis (metric code ->
    amount, before device error); `severity(at)` scales it over the episode. `metrics` are what
    an alert could see it in (metric codes, or event types for inactivity). From the crisis
    until `away_until` the citizen measures nothing and no sensor sees her (in hospital, or for
    inactivity first on the floor and then in hospital)."""

    id: str
    citizen: str
    condition: str
    kind: str
    onset: datetime
    crisis: datetime
    end: datetime
    metrics: tuple[str, ...]
    change: dict[str, float] = field(default_factory=dict, hash=False)
    away_until: datetime | None = None
    notes: dict[str, float | bool | str] = field(default_factory=dict, hash=False)
    ramp_power: float = 1.0

    @property
    def last(self) -> datetime:
        """When the episode stops affecting anything (recovered and home)."""
        return max(self.end, self.away_until or self.end)

    def active(self, at: datetime) -> bool:
        return self.onset <= at < self.end

    def away(self, at: datetime) -> bool:
        return self.away_until is not None and self.crisis <= at < self.away_until

    def severity(self, at: datetime) -> float:
        """0 outside; rising from onset to 1 at the crisis; falling back to 0 at the end."""
        if not self.active(at):
            return 0.0
        if at < self.crisis:
            rise = (at - self.onset) / (self.crisis - self.onset)
            return float(rise ** self.ramp_power)
        if self.end <= self.crisis:
            return 1.0
        return 1.0 - (at - self.crisis) / (self.end - self.crisis)


@dataclass(frozen=True)
class Cadence:
    kind: str
    mean_gap: timedelta  # mean wait after the quiet spell, before personal rate


# Denser than in life (a heart-failure patient is admitted about once a year), so that a run
# of a few months holds several episodes per citizen to measure alerting against.
CADENCE = {
    "heart_failure": Cadence("hf_decompensation", timedelta(days=12)),
    "copd": Cadence("copd_exacerbation", timedelta(days=12)),
    "diabetes": Cadence("hypoglycaemia", timedelta(days=7)),
    "hypertension": Cadence("bp_rise", timedelta(days=14)),
    "frail_alone": Cadence("inactivity", timedelta(days=10)),
}


def _days(rng: random.Random, lo: float, hi: float) -> timedelta:
    return timedelta(days=rng.uniform(lo, hi))


def _hospital(rng: random.Random, crisis: datetime, share: float) -> datetime | None:
    if rng.random() >= share:
        return None
    return crisis + _days(rng, 2, 8)


@dataclass(frozen=True)
class Shape:
    crisis: datetime
    end: datetime
    metrics: tuple[str, ...]
    change: dict[str, float]
    away_until: datetime | None = None
    notes: dict[str, float | bool | str] = field(default_factory=dict)
    ramp_power: float = 1.0


Baseline = Mapping[str, float]


def _heart_failure(rng: random.Random, onset: datetime, _base: Baseline) -> Shape:
    # A quarter with (almost) no gain; the rest a skewed spread with a tail to ~6 kg.
    gain = rng.uniform(0.0, 0.5) if rng.random() < 0.25 else min(6.5, rng.lognormvariate(0.7, 0.5))
    crisis = onset + _days(rng, 3, 14)
    return Shape(crisis=crisis, end=crisis + _days(rng, 2, 5), ramp_power=1.4,
                 metrics=("body_weight", "pulse_rate", "questionnaire_answer"),
                 change={"body_weight": round(gain, 2),
                         "pulse_rate": round(rng.uniform(0, 12), 1)},
                 away_until=_hospital(rng, crisis, 0.35))


def _copd(rng: random.Random, onset: datetime, _base: Baseline) -> Shape:
    fever = rng.random() < 0.35
    change = {"spo2": -round(rng.triangular(1.0, 8.0, 3.0), 1),
              "pulse_rate": round(rng.uniform(4, 25), 1)}
    metrics: tuple[str, ...] = ("spo2", "pulse_rate", "questionnaire_answer")
    if fever:
        change["body_temperature"] = round(rng.uniform(0.7, 2.0), 2)
        metrics += ("body_temperature",)
    crisis = onset + _days(rng, 1, 4)
    return Shape(crisis=crisis, end=crisis + _days(rng, 4, 14), metrics=metrics, change=change,
                 away_until=_hospital(rng, crisis, 0.25), notes={"fever": fever})


def _hypoglycaemia(rng: random.Random, onset: datetime, base: Baseline) -> Shape:
    low = round(rng.uniform(2.2, 3.6), 1)
    # Symptoms prompt a measurement within minutes; treated, the recheck 15-25 min later is
    # normal again, so the episode is a single low reading.
    return Shape(crisis=onset, end=onset + timedelta(minutes=12), metrics=("blood_glucose",),
                 change={"blood_glucose": round(low - base["blood_glucose"], 1)},
                 notes={"glucose": low})


def _bp_rise(rng: random.Random, onset: datetime, _base: Baseline) -> Shape:
    rise = rng.uniform(12, 45)
    crisis = onset + _days(rng, 2, 10)
    return Shape(crisis=crisis, end=crisis + _days(rng, 1, 3),
                 metrics=("systolic_bp", "diastolic_bp"),
                 change={"systolic_bp": round(rise, 1), "diastolic_bp": round(rise * 0.5, 1)})


def _inactivity(rng: random.Random, onset: datetime, _base: Baseline) -> Shape:
    hours = rng.uniform(2, 16)
    found = onset + timedelta(hours=hours)
    # A third are taken to hospital when found: the flat stays empty for a day or more.
    admitted = found + _days(rng, 1, 4) if rng.random() < 0.3 else None
    return Shape(crisis=onset, end=found, metrics=("motion", "door", "bed"), change={},
                 away_until=admitted,
                 notes={"silent_hours": round(hours, 2),
                        "button_pressed": rng.random() < 0.3})


SHAPES: dict[str, Callable[[random.Random, datetime, Baseline], Shape]] = {
    "heart_failure": _heart_failure, "copd": _copd, "diabetes": _hypoglycaemia,
    "hypertension": _bp_rise, "frail_alone": _inactivity}


def _onset_time(rng: random.Random, at: datetime, condition: str) -> datetime:
    """Acute episodes happen while the citizen is up: the next waking hour on her clock."""
    if condition not in ("diabetes", "frail_alone"):
        return at
    day = local_date(at)
    hour = rng.uniform(7, 21)
    moment = at_local(day, hour)
    return moment if moment >= at else at_local(day + timedelta(days=1), hour)


def personal_rate(seed: int, citizen: str) -> float:
    """How much more (or less) often than usual this citizen deteriorates."""
    return min(1.6, max(0.7, keyed(seed, citizen, "rate").gammavariate(4.0, 1 / 4.0)))


@lru_cache(maxsize=1 << 13)
def _block(seed: int, citizen: str, condition: str, base: tuple[tuple[str, float], ...],
           index: int) -> tuple[Episode, ...]:
    """The candidate episodes whose onset falls in block `index`, in order."""
    if index < 0:
        return ()
    rng = keyed(seed, citizen, "episodes", index)
    cadence = CADENCE[condition]
    begin = EPOCH + BLOCK * index
    mean_days = cadence.mean_gap / timedelta(days=1) / personal_rate(seed, citizen)
    at = begin + timedelta(days=rng.expovariate(1 / mean_days))
    found: list[Episode] = []
    while at < begin + BLOCK:
        onset = _onset_time(rng, at, condition)
        shape = SHAPES[condition](rng, onset, dict(base))
        episode = Episode(id=f"{citizen}-{index}-{len(found)}", citizen=citizen,
                          condition=condition, kind=cadence.kind, onset=onset,
                          crisis=shape.crisis, end=shape.end, metrics=shape.metrics,
                          change=shape.change, away_until=shape.away_until, notes=shape.notes,
                          ramp_power=shape.ramp_power)
        found.append(episode)
        at = episode.last + QUIET + timedelta(days=rng.expovariate(1 / mean_days))
    return tuple(found)


def episodes_between(seed: int, citizen: str, condition: str, baseline: Baseline,
                     start: datetime, end: datetime) -> list[Episode]:
    """The citizen's episodes that affect anything in [start, end), by onset."""
    if start < EPOCH:
        raise ValueError(f"simulations start after {EPOCH.date()}")
    base = tuple(sorted(baseline.items()))
    planned: list[Episode] = []
    for index in range(math.floor((start - EPOCH) / BLOCK) - 1,
                       math.floor((end - EPOCH) / BLOCK) + 1):
        previous = _block(seed, citizen, condition, base, index - 1)
        # The previous block's last candidate may reach into this one: a candidate that would
        # overlap it is dropped, so a citizen has one episode at a time.
        reach = previous[-1].last + QUIET if previous else EPOCH
        planned.extend(e for e in _block(seed, citizen, condition, base, index)
                       if e.onset >= reach and e.onset < end and e.last > start)
    return planned
