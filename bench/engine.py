"""Alert engine benchmark: how many queued items the engine evaluates per second, with its
history and configuration caches against the same engine reading every batch's histories and
configurations from the database (the engine before the caches), measured in the same run.

Each system gets a fresh database: `--citizens` on a COPD plan (bench/alerts.py's set-up), each
with a pulse oximeter that has sent `--rounds` rounds of two in-band readings (SpO2 and pulse:
two queue rows each) ten seconds apart, stored through the ingest insert, which queues them.
Then one AlertEngine drains the whole queue with `drain_once` (no other process running) and
the time is taken. Rotated over `--repeat` rounds, median reported."""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

import psycopg

from alerts.engine import AlertEngine
from bench.alerts import Citizen, bench_setup
from devices import repository as devices_repo
from devices.repository import ReadingRow

SYSTEMS = {"without cache (baseline)": False, "with caches": True}


def queue_readings(dsn: str, citizens: list[Citizen], rounds: int) -> int:
    """Store `rounds` of two oximeter readings per citizen (one transaction per round)."""
    start = datetime.now(UTC) - timedelta(seconds=10 * rounds + 60)
    with psycopg.connect(dsn, autocommit=True) as conn:
        devices_repo.prepare_reading_stage(conn)
        for round_ in range(rounds):
            rows = []
            for citizen in citizens:
                for step in range(2):
                    seq = 2 * round_ + step + 1
                    at = start + timedelta(seconds=10 * round_ + step)
                    rows += [ReadingRow(citizen.oximeter, metric, at, seq, citizen.id, value, at,
                                        None, False, None, "valid", False)
                             for metric, value in (("spo2", 95.0), ("pulse_rate", 72.0))]
            with conn.transaction():
                devices_repo.insert_readings(conn, rows)
        row = conn.execute("SELECT count(*) FROM evaluation_queue").fetchone()
    return int(row[0]) if row else 0


def drain(citizens: int, rounds: int, cache: bool) -> float:
    """Items/s of one engine draining the whole queue of a fresh database."""
    with bench_setup(1, citizens) as (dsn, _, _, copd):
        queued = queue_readings(dsn, copd, rounds)
        engine = AlertEngine(dsn, lambda: datetime.now(UTC), cache=cache)
        with psycopg.connect(dsn, autocommit=True) as conn:
            began = time.perf_counter()
            taken = 0
            while (batch := engine.drain_once(conn)) > 0:
                taken += batch
            elapsed = time.perf_counter() - began
    if taken != queued:
        raise RuntimeError(f"drained {taken} of {queued}")
    return taken / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--citizens", type=int, default=450)
    parser.add_argument("--rounds", type=int, default=40, help="of two readings per citizen")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {name: [] for name in SYSTEMS}
    names = list(SYSTEMS)
    for round_ in range(args.repeat):
        for name in names[round_ % 2:] + names[:round_ % 2]:
            results[name].append(drain(args.citizens, args.rounds, SYSTEMS[name]))
            print(f"  {name:26s} round {round_ + 1}: {results[name][-1]:8.0f} items/s", flush=True)
    items = args.citizens * args.rounds * 4
    baseline = statistics.median(results[names[0]])
    print(f"\nAlert engine drain: {args.citizens} COPD citizens, {items} queued rows "
          f"({args.rounds} rounds of 2 oximeter readings), median of {args.repeat}\n")
    print("| engine | items/s | range | vs baseline |\n|---|---|---|---|")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {min(values):,.0f}–{max(values):,.0f} | "
              f"{median / baseline:.1f}x |")


if __name__ == "__main__":
    main()
