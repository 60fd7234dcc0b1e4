"""The simulated population looks like home monitoring: imperfect adherence, drifting values,
device models that err differently, a local daily rhythm, unusual normals, varied episodes."""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from simulators.population import (
    CitizenSpec,
    DeviceSpec,
    build_fleet,
    measure,
    plan_episodes,
    planned_between,
)
from simulators.streams import LOCAL, at_local, local_date, local_hour, rhythm

START = datetime(2025, 1, 6, tzinfo=UTC)


def _readings(citizen: CitizenSpec, device: DeviceSpec, start: datetime,
              end: datetime) -> list[tuple[datetime, dict[str, float]]]:
    shown = []
    for at, _ in planned_between(citizen, device, start, end):
        reading = measure(citizen, device.kind, at, random.Random(f"{device.id}{at}"))
        assert reading is not None
        shown.append((at, reading[1]))
    return shown


def _measuring(fleet: list[CitizenSpec]) -> list[tuple[CitizenSpec, DeviceSpec]]:
    return [(c, d) for c in fleet for d in c.devices if d.schedule]


def _lag1(daily: dict[date, float]) -> float:
    """Lag-1 autocorrelation over pairs of consecutive calendar days."""
    mean, var = statistics.fmean(daily.values()), statistics.pvariance(daily.values())
    pairs = [(v, daily[d + timedelta(days=1)]) for d, v in daily.items()
             if d + timedelta(days=1) in daily]
    return sum((a - mean) * (b - mean) for a, b in pairs) / len(pairs) / var


def test_adherence_is_below_full_varies_by_citizen_with_repeats_and_breaks() -> None:
    days = 60
    end = START + timedelta(days=days)
    shares, repeats, longest_gap = [], 0, 0
    for citizen, device in _measuring(build_fleet(30, 5)):
        times = [at for at, _ in planned_between(citizen, device, START, end)]
        # A repeat is a second measurement within minutes of the one before.
        firsts = [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] > timedelta(minutes=10)]
        repeats += len(times) - len(firsts)
        shares.append(len(firsts) / (len(device.schedule) * days))
        measured_days = sorted({local_date(t) for t in times})
        gaps = [(b - a).days - 1 for a, b in zip(measured_days, measured_days[1:], strict=False)]
        longest_gap = max([longest_gap, *gaps])
    assert max(shares) < 1.0 and statistics.fmean(shares) < 0.9
    assert max(shares) - min(shares) > 0.3
    assert repeats > 20
    assert longest_gap >= 4  # someone stopped measuring for days


def test_day_to_day_drift_is_autocorrelated_not_white_noise() -> None:
    weight, systolic = [], []
    for citizen, device in _measuring(build_fleet(40, 2)):
        if device.kind not in ("scale", "bp_monitor"):
            continue
        daily: dict[date, list[float]] = defaultdict(list)
        name = "weight" if device.kind == "scale" else "systolic"
        for at, values in _readings(citizen, device, START, START + timedelta(days=120)):
            daily[local_date(at)].append(values[name])
        lag1 = _lag1({d: statistics.fmean(v) for d, v in daily.items()})
        (weight if device.kind == "scale" else systolic).append(lag1)
    assert len(weight) >= 10 and min(weight) > 0.3
    assert statistics.median(systolic) > 0.3


def test_device_models_measure_with_different_error() -> None:
    citizen = next(c for c in build_fleet(10, 1) if c.condition == "copd")
    at = START + timedelta(hours=8)

    def spread(model: str) -> tuple[float, float]:
        spo2 = [measure(citizen, "pulse_oximeter", at, random.Random(i), model=model)[1]["spo2"]
                for i in range(3000)]  # type: ignore[index]
        return statistics.fmean(spo2), statistics.stdev(spo2)

    clinical, cheap = spread("Nonin 3230"), spread("Contec CMS50D-BT")
    assert cheap[1] > 1.5 * clinical[1]
    assert cheap[0] - clinical[0] > 0.5  # the cheap one reads high
    models = {d.model for c in build_fleet(30, 1) for d in c.devices if d.kind == "scale"}
    assert len(models) == 2  # the fleet mixes models


def test_daily_rhythm_and_routine_follow_copenhagen_time_across_dst() -> None:
    spring = date(2025, 3, 30)  # clocks go from 02:00 to 03:00
    before, after = at_local(spring - timedelta(days=1), 9), at_local(spring + timedelta(days=1), 9)
    assert (before.hour, after.hour) == (8, 7)  # 09:00 local is 08:00 UTC, then 07:00 UTC
    assert rhythm(before, 10) == rhythm(after, 10)
    assert at_local(spring, 2.5).astimezone(LOCAL).hour == 3  # the gap: a clock set by hand

    pairs = _measuring(build_fleet(40, 1))

    def mornings(first: date) -> tuple[float, float]:
        start = at_local(first, 0)
        times = [t for c, d in pairs
                 for t, _ in planned_between(c, d, start, start + timedelta(days=28))
                 if local_hour(t) < 11]
        return (statistics.fmean(local_hour(t) for t in times),
                statistics.fmean(t.hour + t.minute / 60 for t in times))

    (local_winter, utc_winter), (local_summer, utc_summer) = (
        mornings(spring - timedelta(days=29)), mornings(spring + timedelta(days=1)))
    assert abs(local_winter - local_summer) < 0.15  # the same habit on her own clock
    assert 0.85 < utc_winter - utc_summer < 1.15  # so an hour earlier in UTC


def test_some_citizens_live_outside_textbook_bands() -> None:
    fleet = build_fleet(10, 4)
    hypoxaemic = [c for c in fleet if c.condition == "copd" and c.body.spo2 <= 90]
    assert hypoxaemic
    citizen = hypoxaemic[0]
    oximeter = next(d for d in citizen.devices if d.kind == "pulse_oximeter")
    spo2 = [v["spo2"] for _, v in _readings(citizen, oximeter, START, START + timedelta(days=30))]
    assert statistics.median(spo2) <= 91  # her normal, no episode planned
    assert any(c.body.systolic >= 155 for c in fleet if c.condition == "hypertension")


def test_several_varied_episodes_per_citizen_over_90_days() -> None:
    fleet = build_fleet(50, 1)
    episodes = plan_episodes(fleet, START, START + timedelta(days=90), seed=1)
    per_citizen = [sum(e.citizen == c.key for e in episodes) for c in fleet]
    assert min(per_citizen) >= 1 and statistics.fmean(per_citizen) >= 3
    assert sum(n >= 2 for n in per_citizen) >= 0.8 * len(fleet)

    longer = plan_episodes(build_fleet(50, 1), START, START + timedelta(days=365), seed=1)
    hf = [e for e in longer if e.kind == "hf_decompensation"]
    ramps = [(e.crisis - e.onset) / timedelta(days=1) for e in hf]
    gains = [e.change["body_weight"] for e in hf]
    assert 3 <= min(ramps) < 5 and 11 < max(ramps) <= 14
    assert sum(g < 0.5 for g in gains) >= 0.1 * len(hf) and max(gains) > 3

    copd = [e for e in longer if e.kind == "copd_exacerbation"]
    fever = [e for e in copd if e.notes["fever"]]
    assert 0.15 * len(copd) < len(fever) < 0.6 * len(copd)
    assert all("body_temperature" in e.metrics for e in fever)
    falls = [-e.change["spo2"] for e in copd]
    rises = [e.change["pulse_rate"] for e in copd]
    assert min(falls) < 2 and max(falls) > 5 and max(rises) - min(rises) > 10
    assert all(e.end - e.crisis >= timedelta(days=4) for e in copd)
    assert {e.kind for e in longer} == {"hf_decompensation", "copd_exacerbation",
                                        "hypoglycaemia", "bp_rise", "inactivity"}


def test_planning_day_by_day_gives_the_same_episodes_as_planning_at_once() -> None:
    whole = plan_episodes(build_fleet(10, 6), START, START + timedelta(days=60), seed=6)
    stepwise_fleet = build_fleet(10, 6)
    stepwise = []
    for day in range(60):
        stepwise += plan_episodes(stepwise_fleet, START + timedelta(days=day),
                                  START + timedelta(days=day + 1), seed=6)
    assert sorted(stepwise, key=lambda e: e.id) == sorted(whole, key=lambda e: e.id)
    later = plan_episodes(build_fleet(10, 6), START + timedelta(days=30),
                          START + timedelta(days=60), seed=6)
    assert {e.id for e in later} <= {e.id for e in whole}


def test_hypoglycaemia_is_a_single_low_reading_among_normal_ones() -> None:
    fleet = [c for c in build_fleet(30, 3) if c.condition == "diabetes"]
    end = START + timedelta(days=90)
    episodes = plan_episodes(fleet, START, end, seed=3)
    assert len(episodes) >= 20
    shown: list[float] = []
    normal: list[float] = []
    for citizen in fleet:
        glucometer = next(d for d in citizen.devices if d.kind == "glucometer")
        readings = _readings(citizen, glucometer, START, end)
        for episode in (e for e in episodes if e.citizen == citizen.key):
            during = [i for i, (at, _) in enumerate(readings) if episode.active(at)]
            assert len(during) == 1, episode.id
            low, recheck = readings[during[0]][1]["glucose"], readings[during[0] + 1][1]["glucose"]
            shown.append(low)
            assert low < 4.5 and recheck >= 4.0  # the recheck after treatment is normal
        normal += [v["glucose"] for at, v in readings
                   if not any(e.active(at) for e in citizen.episodes)]
    assert sum(v < 4.0 for v in shown) >= 0.95 * len(shown)  # meters err, even on a low
    assert sum(v < 4.0 for v in normal) <= 0.01 * len(normal)


def test_inactivity_silences_every_sensor_until_someone_comes() -> None:
    fleet = [c for c in build_fleet(40, 8) if c.condition == "frail_alone"]
    end = START + timedelta(days=90)
    episodes = plan_episodes(fleet, START, end, seed=8)
    assert len(episodes) >= 20
    for citizen in fleet:
        events = sorted((at, action) for device in citizen.devices
                        for at, action in planned_between(citizen, device, START, end))
        for episode in (e for e in episodes if e.citizen == citizen.key):
            silent = [a for at, a in events if episode.onset <= at < episode.end]
            assert set(silent) <= {"button"}, episode.id
            if episode.away_until is not None:  # found, taken away: nobody home
                assert not [at for at, _ in events
                            if episode.end + timedelta(minutes=3) <= at < episode.away_until]
            assert any(episode.onset - timedelta(hours=6) <= at < episode.onset
                       for at, _ in events)  # she was active before
            if episode.end < end and episode.away_until is None:
                assert ("door_open" in {a for at, a in events if at == episode.end})
    pressed = [e for e in episodes if e.notes["button_pressed"]]
    assert 0 < len(pressed) < len(episodes)


def test_plans_are_pure_functions_of_seed_and_time() -> None:
    first, again = build_fleet(10, 9), build_fleet(10, 9)
    assert first == again and first != build_fleet(10, 10)
    assert build_fleet(12, 9)[:10] == first  # adding citizens changes nobody
    window = (START, START + timedelta(days=20))
    assert plan_episodes(first, *window, seed=9) == plan_episodes(again, *window, seed=9)
    for a, b in zip(first, again, strict=True):
        for da, db in zip(a.devices, b.devices, strict=True):
            assert planned_between(a, da, *window) == planned_between(b, db, *window)
    assert replace(first[0], key="other") != first[0]
