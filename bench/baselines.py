"""Personal-baseline benchmark: how fast the detector scores on one core, and how long retraining
10,000 citizen-metric baselines over 30 days of history takes (issue 8's target: under 5 minutes
on this 2-core machine).

`./scripts/bench baselines [--citizens N] [--keep]` measures, in one run:

  * detector throughput on one core (this process, one thread): `Detector.update` streaming
    `--rows` of a noisy, citizen-like series (two measurements a day, a daily rhythm), and
    `Baseline.score` (a frozen baseline's peek with a few points since training: the per-reading
    cost in the alert engine) over the baselines of `--score-series` synthetic series. Each beside
    the plain baseline on the same inputs: a robust z-score of the value against the median and
    MAD (numpy) of the same points (for streaming: the last `history` points, what the detector
    keeps);
  * retraining: `--citizens` hypertension citizens (3 baselines each: 3,334 gives 10,002), each
    with a paired blood-pressure monitor and 30 days of history at about two measurements a day,
    stored through the ingest insert (devices.repository.insert_readings, COPY) into a database
    of its own (migrated, dropped at the end unless `--keep`); then alerts.retraining.retrain over
    all of them in chunks of DEFAULT_CHUNK on one UTC connection, committing per chunk, as the
    engine does. Printed: the total time against the target, baselines/s, active vs learning,
    where the time goes (load_series and train_citizen timed apart on the same histories, and a
    profile of one chunk) and the size of the stored state.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import numpy as np
import psycopg

from alerts import baseline_repository, context_repository
from alerts import service as alerts_service
from alerts.baselines import SERIES_BY_PLAN, series_of, train_citizen
from alerts.context import CitizenHistory, load_series
from alerts.plans import LOCAL
from alerts.retraining import DEFAULT_CHUNK, retrain
from anomaly.baseline import ACTIVE, Baseline, BaselineConfig, Point, train
from anomaly.detector import Detector, DetectorConfig
from core.db import use_utc
from core.migrations import migrate
from devices import repository as devices_repo
from devices import service as devices_service
from devices.models import Device
from devices.repository import ReadingRow

ADMIN_DSN = os.environ.get("TELECARE_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
PLAN = "hypertension"
DEVICE_KIND = "bp_monitor"
SERIES = SERIES_BY_PLAN[PLAN]
# What a blood-pressure monitor measures, in the order Person.measure gives it.
BP_METRICS = ("systolic_bp", "diastolic_bp", "pulse_rate")
HISTORY = timedelta(days=30)
TARGET_S = 300.0
# Morning and evening measurement, local time, each with a jitter and a chance of being missed.
MEASUREMENT_HOURS = (7.5, 19.5)
JITTER_H = 0.5
MISSED = 0.05
# Citizens enrolled per transaction while loading (readings: 3 per measurement, ~60 measurements).
LOAD_BATCH = 250
MAD_TO_SIGMA = 1.4826


# --- synthetic citizens ------------------------------------------------------------------------

@dataclass(frozen=True)
class Person:
    """One citizen's usual blood pressure and pulse, and how much they vary."""

    systolic: float
    diastolic: float
    pulse: float
    spread: float

    @classmethod
    def drawn(cls, rng: random.Random) -> Person:
        return cls(rng.gauss(138, 12), rng.gauss(84, 7), rng.gauss(70, 8), rng.uniform(0.7, 1.4))

    def measure(self, rng: random.Random, evening: bool) -> tuple[float, float, float]:
        """(systolic, diastolic, pulse) as a monitor shows them: whole numbers, a little higher
        in the evening."""
        lift = 3.0 if evening else 0.0
        return (round(rng.gauss(self.systolic + lift, 8 * self.spread)),
                round(rng.gauss(self.diastolic + lift / 2, 5 * self.spread)),
                round(rng.gauss(self.pulse + lift, 5 * self.spread)))


def measurement_times(rng: random.Random, start: datetime, end: datetime) -> Iterator[datetime]:
    """About two measurements a day between `start` and `end` (UTC), jittered, some missed."""
    day = start.astimezone(LOCAL).date()
    while True:
        for hour in MEASUREMENT_HOURS:
            local = datetime.combine(day, datetime.min.time(), LOCAL) + timedelta(
                hours=hour + rng.gauss(0, JITTER_H))
            at = local.astimezone(UTC)
            if at >= end:
                return
            if at >= start and rng.random() >= MISSED:
                yield at
        day += timedelta(days=1)


def daily_series(rng: random.Random, rows: int, start: datetime) -> list[Point]:
    """`rows` systolic readings of one citizen, twice a day, as the detector gets them (local)."""
    person = Person.drawn(rng)
    points = []
    for at in measurement_times(rng, start, start + timedelta(days=rows)):
        evening = at.astimezone(LOCAL).hour >= 12
        points.append((at.astimezone(LOCAL), float(person.measure(rng, evening)[0])))
        if len(points) == rows:
            break
    return points


# --- detector throughput ------------------------------------------------------------------------

def timed(run: Callable[[], object]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def robust_z(value: float, values: np.ndarray[Any, np.dtype[np.float64]]) -> float:
    center = float(np.median(values))
    mad = float(np.median(np.abs(values - center)))
    return (value - center) / max(MAD_TO_SIGMA * mad, 1e-9)


def stream_detector(points: Sequence[Point]) -> None:
    detector = Detector()
    for at, value in points:
        detector.update(at, value)


def stream_robust_z(points: Sequence[Point], window: int) -> None:
    """The baseline of streaming: each value against the last `window` values before it."""
    values = np.array([value for _, value in points])
    for index in range(1, len(values)):
        robust_z(float(values[index]), values[max(0, index - window):index])


@dataclass(frozen=True)
class ScoreCase:
    """A frozen baseline, the points it was trained on, and readings to score with it."""

    baseline: Baseline
    trained: np.ndarray[Any, np.dtype[np.float64]]
    since: list[Point]
    queries: list[Point]


def score_cases(rng: random.Random, count: int, since: int, queries: int) -> list[ScoreCase]:
    """`count` series of 30 days each, trained and frozen at their last point but `since + queries`."""
    cases = []
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(count):
        points = daily_series(rng, 60 + since + queries, start)
        history, after = points[:60], points[60:]
        now = history[-1][0] + timedelta(minutes=1)
        baseline = train("systolic_bp", history, (), now, BaselineConfig(training_window=HISTORY))
        if baseline.status != ACTIVE:
            raise RuntimeError("a 30-day series of 60 points should be active")
        cases.append(ScoreCase(baseline, np.array([v for _, v in history]), after[:since],
                               after[since:]))
    return cases


def score_baselines(cases: Sequence[ScoreCase]) -> None:
    for case in cases:
        for at, value in case.queries:
            case.baseline.score(at, value, case.since)


def score_robust_z(cases: Sequence[ScoreCase]) -> None:
    for case in cases:
        for _, value in case.queries:
            robust_z(value, case.trained)


def best_of(repeat: int, run: Callable[[], object]) -> float:
    """The fastest of `repeat` runs (the others were slowed by something else)."""
    return min(timed(run) for _ in range(repeat))


def detector_throughput(rows: int, series: int, repeat: int) -> None:
    rng = random.Random(8)
    points = daily_series(rng, rows, datetime(2000, 1, 1, tzinfo=UTC))
    window = DetectorConfig().history
    update_s = best_of(repeat, lambda: stream_detector(points))
    z_stream_s = best_of(repeat, lambda: stream_robust_z(points, window))
    cases = score_cases(rng, series, since=3, queries=20)
    scores = sum(len(case.queries) for case in cases)
    score_s = best_of(repeat, lambda: score_baselines(cases))
    z_score_s = best_of(repeat, lambda: score_robust_z(cases))
    print(f"Detector throughput, one core, best of {repeat}\n")
    print("| what | inputs | per second | us each | baseline per second | vs baseline |")
    print("|---|---|---|---|---|---|")
    print(f"| Detector.update (streaming) | {len(points):,} rows, 2 a day | "
          f"{len(points) / update_s:,.0f} | {1e6 * update_s / len(points):.1f} | "
          f"{(len(points) - 1) / z_stream_s:,.0f} (robust z, last {window}) | "
          f"{z_stream_s / (len(points) - 1) / (update_s / len(points)):.2f}x |")
    print(f"| Baseline.score (frozen, 3 since) | {scores:,} scores, {series} baselines | "
          f"{scores / score_s:,.0f} | {1e6 * score_s / scores:.1f} | "
          f"{scores / z_score_s:,.0f} (robust z, 60 training points) | "
          f"{z_score_s / score_s:.2f}x |")
    print("\n(vs baseline: the detector's speed over the plain robust z-score's; below 1 it is "
          "slower.)\n", flush=True)


# --- the database ----------------------------------------------------------------------------

@contextmanager
def own_database(keep: bool) -> Iterator[str]:
    """A fresh migrated database of this benchmark's own; dropped afterwards unless `keep`."""
    name = f"telecare_bench_baselines_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrate(dsn)
        yield dsn
    finally:
        if keep:
            print(f"\nkept the database: {dsn}")
        else:
            with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def enrol(conn: psycopg.Connection[Any], index: int, since: datetime) -> tuple[UUID, str]:
    """A citizen on the plan since `since` with a monitor paired since then: (citizen, device)."""
    citizen = devices_service.enrol_citizen(conn, "Bench Baseline Citizen", [PLAN])
    device_id = f"bpm-{index:05d}"
    devices_service.register_device(conn, Device(id=device_id, kind=DEVICE_KIND, model="bench",
                                                 serial=device_id))
    devices_service.pair_device(conn, device_id, citizen, since)
    alerts_service.set_plan(conn, citizen, PLAN, since, "bench", since)
    return citizen, device_id


def history_rows(rng: random.Random, citizen: UUID, device_id: str, start: datetime,
                 now: datetime) -> list[ReadingRow]:
    """The citizen's measurements from `start` to `now`, three readings each, as ingest stores them."""
    person = Person.drawn(rng)
    rows = []
    for seq, at in enumerate(measurement_times(rng, start, now), start=1):
        values = person.measure(rng, at.astimezone(LOCAL).hour >= 12)
        received = at + timedelta(seconds=rng.uniform(1, 20))
        rows += [ReadingRow(device_id, metric, at, seq, citizen, float(value), received, at,
                            False, None, "valid", False)
                 for metric, value in zip(BP_METRICS, values, strict=True)]
    return rows


def populate(dsn: str, count: int, now: datetime) -> tuple[list[UUID], int]:
    """`count` citizens with HISTORY of readings before `now`, LOAD_BATCH per transaction:
    (citizens, readings stored)."""
    rng = random.Random(30)
    start = now - HISTORY
    citizens: list[UUID] = []
    stored = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        devices_repo.prepare_reading_stage(conn)
        for first in range(0, count, LOAD_BATCH):
            with conn.transaction():
                rows = []
                for index in range(first, min(count, first + LOAD_BATCH)):
                    citizen, device_id = enrol(conn, index, start - timedelta(days=1))
                    citizens.append(citizen)
                    rows += history_rows(rng, citizen, device_id, start, now)
                stored += devices_repo.insert_readings(conn, rows)[0]
        conn.execute("VACUUM ANALYZE readings")
    return citizens, stored


# --- retraining --------------------------------------------------------------------------------

def chunks(citizens: Sequence[UUID], size: int = DEFAULT_CHUNK) -> Iterator[Sequence[UUID]]:
    for first in range(0, len(citizens), size):
        yield citizens[first:first + size]


@dataclass
class Retrained:
    """What the timed retraining did: its time, each chunk's, and the baselines by status."""

    seconds: float
    per_chunk: list[float]
    active: int
    learning: int


def timed_retrain(dsn: str, citizens: Sequence[UUID], now: datetime, config: BaselineConfig
                  ) -> Retrained:
    """Retrain everyone a chunk at a time, committing each. Only the statuses are kept: holding
    10,000 trained detectors here would slow every garbage collection in the loop (the engine's
    baseline cache holds them, but not within this loop)."""
    statuses: list[str] = []
    per_chunk = []
    with psycopg.connect(dsn) as conn:
        use_utc(conn)
        conn.commit()
        began = time.perf_counter()
        for chunk in chunks(citizens):
            chunk_began = time.perf_counter()
            with conn.transaction():
                result = retrain(conn, chunk, now, config)
            per_chunk.append(time.perf_counter() - chunk_began)
            statuses += [b.status for baselines in result.values() for b in baselines.values()]
        elapsed = time.perf_counter() - began
    active = statuses.count(ACTIVE)
    return Retrained(elapsed, per_chunk, active, len(statuses) - active)


def train_histories(histories: dict[UUID, CitizenHistory], now: datetime,
                    config: BaselineConfig) -> dict[UUID, dict[str, Baseline]]:
    since = now - config.training_window
    names = series_of([PLAN])
    return {citizen: train_citizen(names, history.series_within(since, now), history.readings,
                                   history.events, (), now, config)
            for citizen, history in histories.items()}


@dataclass
class Split:
    """Seconds spent in each part of retraining, summed over the chunks."""

    queries: float = 0.0  # the two history queries of load_series, alone
    load_series: float = 0.0  # load_series whole: those queries and building the histories
    configuration: float = 0.0  # retrain's other queries: plans, pauses, alert spans
    train_citizen: float = 0.0
    save: float = 0.0  # baseline_repository.save of what was trained

    @property
    def total(self) -> float:
        return self.load_series + self.configuration + self.train_citizen + self.save


def time_split(dsn: str, citizens: Sequence[UUID], now: datetime, config: BaselineConfig
               ) -> Split:
    """Each part of retrain timed apart on the same histories, every chunk rolled back (no
    pauses or alerts here: nothing is excluded)."""
    split = Split()
    since = now - config.training_window
    with psycopg.connect(dsn) as conn:
        use_utc(conn)
        for chunk in chunks(citizens):
            windows = {citizen: (since, now) for citizen in chunk}
            began = time.perf_counter()
            context_repository.readings_in_windows(conn, windows)
            context_repository.events_in_windows(conn, windows)
            split.queries += time.perf_counter() - began
            began = time.perf_counter()
            histories = load_series(conn, windows)
            loaded = time.perf_counter()
            context_repository.plans(conn, chunk, now)
            context_repository.pauses_overlapping(conn, chunk, since, now)
            baseline_repository.alert_spans(conn, chunk, since)
            split.configuration += time.perf_counter() - loaded
            loaded = time.perf_counter()
            trained = train_histories(histories, now, config)
            done = time.perf_counter()
            baseline_repository.save(conn, trained)
            split.load_series += loaded - began
            split.train_citizen += done - loaded
            split.save += time.perf_counter() - done
            conn.rollback()
    return split


def profile_chunk(dsn: str, citizens: Sequence[UUID], now: datetime, config: BaselineConfig,
                  top: int) -> str:
    """cProfile of retrain on the first chunk (rolled back): the top entries by own time."""
    profiler = cProfile.Profile()
    with psycopg.connect(dsn) as conn:
        use_utc(conn)
        profiler.enable()
        retrain(conn, citizens[:DEFAULT_CHUNK], now, config)
        profiler.disable()
        conn.rollback()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    return out.getvalue()


STATE_SIZE = """
SELECT count(*), count(state), avg(length(state::text)), max(length(state::text)),
       pg_total_relation_size('anomaly_baselines')
  FROM anomaly_baselines"""


def stored_state(dsn: str) -> tuple[int, int, float, int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(STATE_SIZE).fetchone()
    if row is None:
        raise RuntimeError("no answer from the state size query")
    return int(row[0]), int(row[1]), float(row[2] or 0), int(row[3] or 0), int(row[4])


# --- report ------------------------------------------------------------------------------------

def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report_retraining(run: Retrained, citizens: int) -> None:
    baselines = run.active + run.learning
    print(f"\nRetraining: {citizens:,} citizens on {PLAN} ({len(SERIES)} series each), "
          f"{baselines:,} baselines, {len(run.per_chunk)} chunks of {DEFAULT_CHUNK}, "
          "one connection, a commit per chunk\n")
    print(f"  total                {run.seconds:8.1f} s   ({baselines / run.seconds:,.0f} "
          f"baselines/s, {1000 * run.seconds / baselines:.2f} ms each)")
    print(f"  per chunk            median {statistics.median(run.per_chunk):.2f} s, "
          f"max {max(run.per_chunk):.2f} s")
    print(f"  active / learning    {run.active:,} / {run.learning:,}")
    scaled = run.seconds * 10_000 / baselines
    verdict = "met" if scaled < TARGET_S else "NOT met"
    note = "" if baselines >= 10_000 else f", scaled linearly from {baselines:,}"
    print(f"  target               {TARGET_S:.0f} s for 10,000 baselines: {verdict} "
          f"({scaled:.1f} s{note}; headroom {TARGET_S / scaled:.1f}x)")


def report_split(split: Split, timed_total: float) -> None:
    parts = (("load_series", split.load_series),
             ("  of which its two queries (readings, events)", split.queries),
             ("  of which building the histories", split.load_series - split.queries),
             ("plans, pauses, alert spans queries", split.configuration),
             ("train_citizen", split.train_citizen),
             ("baseline_repository.save", split.save))
    print(f"\nWhere the time goes: each part of retrain timed apart on the same histories, every "
          f"chunk rolled back ({split.total:.1f} s in all, against {timed_total:.1f} s timed "
          "above with commits):\n")
    for name, seconds in parts:
        print(f"  {name:50s} {seconds:7.1f} s  {100 * seconds / split.total:5.1f} %")


def report_state(dsn: str) -> None:
    rows, with_state, avg_bytes, max_bytes, table_bytes = stored_state(dsn)
    print(f"\nStored state: {rows:,} rows ({with_state:,} with a state), state::text avg "
          f"{avg_bytes:,.0f} B, max {max_bytes:,} B; anomaly_baselines total "
          f"{table_bytes / 2**20:.1f} MiB ({table_bytes / max(rows, 1):,.0f} B a row)")


def retraining(citizens: int, keep: bool, profile_top: int) -> None:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    config = BaselineConfig(training_window=HISTORY)
    with own_database(keep) as dsn:
        with psycopg.connect(dsn) as conn:
            backend = devices_repo.storage_backend(conn)
        began = time.perf_counter()
        ids, stored = populate(dsn, citizens, now)
        print(f"Loaded {len(ids):,} citizens, {stored:,} readings over {HISTORY.days} days "
              f"({backend} storage) in {time.perf_counter() - began:.1f} s (not the figure)",
              flush=True)
        print(f"load average before retraining: {load_average()}", flush=True)
        run = timed_retrain(dsn, ids, now, config)
        print(f"load average after retraining:  {load_average()}", flush=True)
        report_retraining(run, len(ids))
        report_state(dsn)  # before the rolled-back passes below leave dead rows in the table
        report_split(time_split(dsn, ids, now, config), run.seconds)
        print(f"\nProfile of retrain on one chunk ({DEFAULT_CHUNK} citizens), top {profile_top} "
              "by own time:\n")
        print(profile_chunk(dsn, ids, now, config, profile_top))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--citizens", type=int, default=3334,
                        help=f"on {PLAN}, {len(SERIES)} baselines each (3,334: 10,002)")
    parser.add_argument("--rows", type=int, default=20_000, help="streamed through Detector.update")
    parser.add_argument("--score-series", type=int, default=500,
                        help="frozen baselines scored (20 readings each)")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs, best taken")
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()
    began = time.perf_counter()
    print(f"{os.cpu_count()} CPUs, load average {load_average()} at the start\n", flush=True)
    detector_throughput(args.rows, args.score_series, args.repeat)
    retraining(args.citizens, args.keep, args.profile_top)
    print(f"load average {load_average()} at the end, {time.perf_counter() - began:.0f} s in all")


if __name__ == "__main__":
    main()
