"""Simulated citizens publish through the broker; the API returns exactly what they measured."""

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.db import open_pool
from core.settings import Settings
from ingest.worker import IngestWorker
from simulators.fleet import Fleet, FleetOptions, FleetReport
from simulators.groundtruth import read_ground_truth
from simulators.population import CONDITIONS, CitizenSpec, build_fleet
from telecare.provision import provision_fleet

pytestmark = pytest.mark.slow


def _run_fleet(settings: Settings, options: FleetOptions,
               conn: psycopg.Connection[Any] | None = None) -> tuple[Fleet, FleetReport]:
    """Register the fleet, then run it (telling it the registry's citizen ids, given `conn`)."""
    assert settings.mqtt_host is not None
    citizens = build_fleet(options.citizens, options.seed, options.prefix)
    provision_fleet(settings.database_dsn(), citizens)
    if conn is not None:
        options = replace(options, citizen_ids={
            k: str(v) for k, v in _citizen_ids(conn, citizens).items()})
    fleet = Fleet(settings.mqtt_host, settings.mqtt_port, settings.mqtt_protocol,
                  settings.topic_root, options)
    return fleet, fleet.run(threading.Event())


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    pool = open_pool(settings.database_dsn(), max_size=2)
    with TestClient(create_app(settings, pool=pool)) as client:
        yield client
    pool.close()


def _citizen_ids(conn: psycopg.Connection[Any], citizens: list[CitizenSpec]) -> dict[str, Any]:
    """Simulated citizen key -> the citizen id its devices are paired to."""
    ids = {}
    for citizen in citizens:
        row = conn.execute("SELECT citizen_id FROM device_pairings WHERE device_id = %s",
                           (citizen.devices[0].id,)).fetchone()
        assert row is not None
        ids[citizen.key] = row[0]
    return ids


def test_the_api_returns_exactly_the_readings_the_fleet_published(
        settings: Settings, worker: IngestWorker, conn: psycopg.Connection[Any],
        api: TestClient, tmp_path: Path) -> None:
    options = FleetOptions(citizens=10, seed=7, speed=400_000, days=3,
                           prefix=f"e{uuid.uuid4().hex[:6]}",
                           ground_truth=str(tmp_path / "truth.jsonl"))
    fleet, report = _run_fleet(settings, options, conn)
    assert report.unanswered() == 0 and not report.rejected
    assert len(report.generated) > 20  # a real run: three days of ten citizens (adherence varies)

    citizen_ids = _citizen_ids(conn, fleet.citizens)
    # The ground truth names citizens by key and, when told, by the registry's id.
    named = {(r["citizen"], r["citizen_id"]) for r in read_ground_truth(tmp_path / "truth.jsonl")
             if r["type"] in ("citizen", "episode")}
    assert named == {(k, str(v)) for k, v in citizen_ids.items()}
    expected: dict[tuple[str, str], list[tuple[datetime, float]]] = {}
    for citizen in fleet.citizens:
        for device in citizen.devices:
            for (device_id, _seq), (mtype, at, values) in report.generated.items():
                if device_id != device.id:
                    continue
                from devices.catalogue import COMPONENTS, MeasurementType

                for name, metric in COMPONENTS[MeasurementType(mtype)].items():
                    expected.setdefault((citizen.key, metric), []).append((at, values[name]))

    start = (fleet.clock.start - timedelta(days=1)).isoformat()
    for (key, metric), points in expected.items():
        response = api.get(f"/v1/citizens/{citizen_ids[key]}/readings",
                           params={"metric": metric, "start": start})
        assert response.status_code == 200
        got = [(datetime.fromisoformat(r["measured_at"]), r["value"])
               for r in response.json()["readings"]]
        assert got == sorted(points), f"{key} {metric}"
    total = sum(len(p) for p in expected.values())
    assert total == conn.execute("SELECT count(*) FROM readings WHERE device_id LIKE %s",
                                 (f"{options.prefix}%",)).fetchone()[0]  # type: ignore[index]


def test_faults_lose_nothing_and_duplicate_nothing(settings: Settings, worker: IngestWorker,
                                                   conn: psycopg.Connection[Any],
                                                   tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    options = FleetOptions(citizens=10, seed=11, speed=400_000, days=4,
                           faults=("duplicates", "offline", "malformed", "clock_skew",
                                   "low_battery", "sensor_fault"),
                           prefix=f"f{uuid.uuid4().hex[:6]}", ground_truth=str(truth))
    fleet, report = _run_fleet(settings, options)
    finished = datetime.now(UTC)
    assert report.unanswered() == 0
    # Only the clock two days ahead has items refused, for its clock; the one three hours
    # behind is stored (late). Refusals are final: the device does not send them again.
    # Which of its items land in the future depends on when the citizen measured (adherence
    # varies), so the expectation is computed from what it generated.
    skewed = fleet.devices[0].spec.id
    surely_future = {key for key, (_, at, _) in report.generated.items()
                     if key[0] == skewed and at > finished + timedelta(minutes=5)}
    reasons = set(report.rejected.values())
    assert surely_future <= report.rejected.keys()
    assert reasons <= {"measured_in_future", "clock_untrusted"}
    assert all(d == skewed for d, _ in report.rejected)
    stored = conn.execute(
        "SELECT count(DISTINCT (device_id, seq)) FROM readings WHERE device_id LIKE %s",
        (f"{options.prefix}%",)).fetchone()
    assert stored == (len(report.generated) - len(report.rejected),)
    like = (f"%/{options.prefix}%",)
    dead = dict(conn.execute("SELECT reason, count(*) FROM dead_letters WHERE topic LIKE %s "
                             "GROUP BY reason", like).fetchall())
    refused = {r for (r,) in conn.execute(
        "SELECT DISTINCT i.reason FROM dead_letter_items i JOIN dead_letters d "
        "ON d.id = i.dead_letter_id WHERE d.topic LIKE %s", like).fetchall()}
    assert refused == reasons
    assert report.malformed_sent > 0 and sum(n for r, n in dead.items()
                                             if r != "items_rejected") > 0
    # A sensor fault's impossible values are stored, marked, not refused.
    # (Whether a glitch falls in this window depends on the wall clock the run starts at;
    # tests/ingest/test_pipeline.py stores implausible values deterministically.)
    glitches = report.glitches - report.rejected.keys()
    marked = {(d, q) for d, q, quality in conn.execute(
        "SELECT device_id, seq, quality FROM readings WHERE device_id LIKE %s",
        (f"{options.prefix}%",)).fetchall() if quality == "implausible"}
    assert marked == glitches
    battery = conn.execute("SELECT max(battery_pct) FROM device_status WHERE device_id LIKE %s",
                           (f"{options.prefix}%",)).fetchone()
    assert battery is not None and battery[0] < 25

    records = list(read_ground_truth(truth))
    assert records[0]["type"] == "run" and records[-1]["type"] == "stop"
    episodes = [r for r in records if r["type"] == "episode"]
    assert episodes and {e["episode"] for e in episodes} <= {
        "hf_decompensation", "copd_exacerbation", "hypoglycaemia", "bp_rise", "inactivity"}
    faults = {r["fault"] for r in records if r["type"] == "fault"}
    # Every fault that happened is logged; which random ones happen depends on the run.
    assert faults <= {"duplicate", "offline", "back_online", "malformed", "clock_skew",
                      "low_battery", "sensor"}
    assert {"clock_skew", "low_battery", "malformed"} <= faults
    assert ("duplicate" in faults) == (report.duplicates_sent > 0)
    assert ("sensor" in faults) == bool(report.glitches)
    assert records[-1]["unanswered"] == 0


def test_a_fleet_is_reproducible_from_its_seed() -> None:
    first, again, other = build_fleet(10, 3), build_fleet(10, 3), build_fleet(10, 4)
    assert first == again and first != other
    assert {c.condition for c in first} == set(CONDITIONS)
