"""Exactly once, end to end: a simulated fleet with episodes publishes through the real
Mosquitto to a real ingest worker process, a real `telecare alerts` process evaluates; each is
killed with SIGKILL mid-stream and restarted. At the end the queue is empty and every alert
the rules owe exists once: the findings are exactly those the pure rules give for what was
stored, each alert counts exactly its findings, none is doubled. And two `telecare alerts`
processes: one leads, the other takes over when the leader is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from alerts.context import event_view, reading_view
from alerts.models import CitizenContext
from alerts.plans import default_thresholds
from alerts.rules import evaluate_new
from core.settings import Settings
from simulators.fleet import Fleet, FleetOptions, FleetReport
from simulators.population import build_fleet
from telecare.provision import provision_fleet
from tests.alerts.engine_support import bp_rows, care_team, enrolled, scalar, store
from tests.conftest import wait_for

pytestmark = pytest.mark.slow
Conn = psycopg.Connection[Any]
# Rules whose findings about a reading or event depend on nothing but that item and the
# citizen's plan: what they owe can be computed from the stored rows alone.
ITEM_RULES = ("threshold:", "implausible:", "emergency_button")


def _env(settings: Settings, dsn: str, **extra: str) -> dict[str, str]:
    return {**os.environ, "TELECARE_DATABASE_URL": dsn,
            "TELECARE_MQTT_HOST": str(settings.mqtt_host),
            "TELECARE_MQTT_PORT": str(settings.mqtt_port),
            "TELECARE_TOPIC_ROOT": settings.topic_root,
            "TELECARE_SHARE_GROUP": settings.share_group,
            "TELECARE_INGEST_CLIENT_ID": settings.ingest_client_id,
            "TELECARE_SESSION_EXPIRY_S": "600", **extra}


class Process:
    """A `telecare` subcommand in a process of its own, logging to a file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.process = subprocess.Popen([sys.executable, "-m", "telecare.cli", *args], env=env,
                                        stdout=log.open("ab"), stderr=subprocess.STDOUT)

    def says(self, text: str) -> bool:
        return text.encode() in self.log.read_bytes()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


def _enrol_fleet(conn: Conn, dsn: str, citizens: list[Any]) -> None:
    """Register the fleet, put everyone on one team, each on the plan of their condition."""
    provision_fleet(dsn, citizens)
    team = care_team(conn)
    for citizen in citizens:
        row = conn.execute("SELECT citizen_id FROM device_pairings WHERE device_id = %s",
                           (citizen.devices[0].id,)).fetchone()
        assert row is not None
        # (Provisioning may have done either already.)
        conn.execute("UPDATE citizens SET care_team_id = coalesce(care_team_id, %s) "
                     "WHERE id = %s", (team, row[0]))
        conn.execute("INSERT INTO citizen_plans (citizen_id, plan, valid, set_by, set_at) "
                     "VALUES (%s, %s, tstzrange(now() - interval '1 year', NULL), 'test', now()) "
                     "ON CONFLICT DO NOTHING", (row[0], citizen.condition))


def _owed(conn: Conn) -> set[tuple[Any, str, str]]:
    """(citizen, rule, occurrence) of every item-rule finding the pure rules give for each
    stored measurement (the readings one message carried: a blood pressure's parts) and event,
    evaluated on its own."""
    plans = {row["id"]: tuple(p for p in [row["plan"]] if p) for row in conn.cursor(
        row_factory=dict_row).execute(
        "SELECT c.id, p.plan FROM citizens c LEFT JOIN citizen_plans p ON p.citizen_id = c.id")}
    cur = conn.cursor(row_factory=dict_row)
    measurements: dict[tuple[Any, ...], list[Any]] = defaultdict(list)
    for row in cur.execute("SELECT * FROM readings"):
        reading = reading_view(row)
        measurements[(row["citizen_id"], reading.device_id, reading.measured_at,
                      reading.seq)].append(reading)
    items: list[tuple[Any, tuple[Any, ...], tuple[Any, ...]]] = (
        [(key[0], tuple(readings), ()) for key, readings in measurements.items()]
        + [(e["citizen_id"], (), (event_view(e),))
           for e in cur.execute("SELECT * FROM device_events")])
    owed = set()
    for citizen, readings, events in items:
        names = plans.get(citizen, ())
        # Evaluated at its received time, where the live engine saw it later: the item rules'
        # findings (which, not when) do not depend on the time.
        context = CitizenContext(
            citizen_id=citizen, plans=names, thresholds=default_thresholds(names),
            readings=readings, events=events, new_readings=readings, new_events=events)
        for finding in evaluate_new(context, (readings or events)[0].received_at):
            if finding.rule.startswith(ITEM_RULES):
                owed.add((citizen, finding.rule, finding.occurrence))
    return owed


def _run_fleet(settings: Settings, options: FleetOptions, report: list[FleetReport]) -> None:
    assert settings.mqtt_host is not None
    fleet = Fleet(settings.mqtt_host, settings.mqtt_port, settings.mqtt_protocol,
                  settings.topic_root, options)
    report.append(fleet.run(threading.Event()))


def test_killed_ingest_and_alert_engine_neither_lose_nor_double_an_alert(
        settings: Settings, fresh_database: str, processes: list[Process],
        tmp_path: Path) -> None:
    dsn = fresh_database
    # About 25 s of stream: a week of 20 citizens.
    options = FleetOptions(citizens=20, seed=5, speed=25_000, days=7,
                           faults=("duplicates", "offline", "sensor_fault"),
                           prefix=f"x{uuid.uuid4().hex[:6]}")
    citizens = build_fleet(options.citizens, options.seed, options.prefix)
    with psycopg.connect(dsn, autocommit=True) as conn:
        _enrol_fleet(conn, dsn, citizens)
        env = _env(settings, dsn, TELECARE_ALERTS_TICK_S="1")
        ingest_log, alerts_log = tmp_path / "ingest.log", tmp_path / "alerts.log"
        processes.append(Process(["ingest"], env, ingest_log))
        processes.append(Process(["alerts"], env, alerts_log))
        wait_for(lambda: processes[0].says("connected to the broker and subscribed"),
                 what="ingest subscribed")
        wait_for(lambda: processes[1].says("alert engine leading"), what="engine leading")

        def stored() -> int:
            return int(scalar(conn, "SELECT count(*) FROM readings"))

        report: list[FleetReport] = []
        runner = threading.Thread(target=_run_fleet, args=(settings, options, report))
        runner.start()
        time.sleep(8)  # a third of the stream
        processes[0].kill()
        stored_at_ingest_kill = stored()
        processes.append(Process(["ingest"], env, ingest_log))
        time.sleep(8)
        processes[1].kill()
        findings_at_engine_kill = scalar(conn, "SELECT count(*) FROM alert_findings")
        stored_at_engine_kill = stored()
        time.sleep(1.0)  # the queue fills while no engine runs
        processes.append(Process(["alerts"], env, alerts_log))
        runner.join(180)
        assert not runner.is_alive() and report and report[0].unanswered() == 0
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM evaluation_queue") == 0,
                 timeout=60, what="the evaluation queue drained")
        final = stored()
        # Both kills fell in the middle of the stream.
        assert 0 < stored_at_ingest_kill < stored_at_engine_kill < final
        assert findings_at_engine_kill > 0

        # Every stored reading was evaluated: the item rules' findings are exactly those owed.
        recorded = set(conn.execute(
            "SELECT citizen_id, rule, occurrence FROM alert_findings WHERE rule LIKE "
            "'threshold:%%' OR rule LIKE 'implausible:%%' OR rule = 'emergency_button'"
        ).fetchall())
        owed = _owed(conn)
        assert len(owed) > 20, "the episodes raised too little to tell"
        assert recorded == owed, (f"missing {len(owed - recorded)}, "
                                  f"unexpected {len(recorded - owed)}")
        # None doubled: each alert counts its own findings, each opened once, one active per
        # citizen and rule.
        # (The finding that clears a self-resolving alert is recorded with it, not counted.)
        mismatched = conn.execute(
            "SELECT a.id, a.rule, a.count, count(f.*) FROM alerts a "
            "LEFT JOIN alert_findings f ON f.alert_id = a.id "
            "AND NOT coalesce((f.detail->>'clears')::boolean, false) "
            "GROUP BY a.id, a.count HAVING a.count <> count(f.*)").fetchall()
        assert mismatched == []
        assert scalar(conn, "SELECT count(*) FROM alert_history WHERE action = 'opened'") == \
            scalar(conn, "SELECT count(*) FROM alerts")
        assert scalar(conn, "SELECT count(*) FROM (SELECT citizen_id, rule FROM alerts "
                      "WHERE state <> 'resolved' GROUP BY 1, 2 HAVING count(*) > 1) d") == 0
        # What the fleet sent is what was stored (the ingest kill lost and doubled nothing).
        sent = len(report[0].generated) - len(report[0].rejected)
        assert scalar(conn, "SELECT count(DISTINCT (device_id, seq)) FROM readings") == sent


def _leader_pid(conn: Conn) -> int | None:
    row = conn.execute("SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                       "WHERE l.locktype = 'advisory' AND l.granted "
                       "AND l.objid = %s::bigint::oid", (0x7E1E_CA91 & 0xFFFFFFFF,)).fetchone()
    return None if row is None else int(row[0])


def test_two_engine_processes_one_leads_and_the_other_takes_over_when_it_is_killed(
        settings: Settings, fresh_database: str, processes: list[Process],
        tmp_path: Path) -> None:
    dsn = fresh_database
    env = _env(settings, dsn, TELECARE_ALERTS_TICK_S="1")
    first = Process(["alerts"], env, tmp_path / "first.log")
    processes.append(first)
    wait_for(lambda: first.says("alert engine leading"), what="first engine leading")
    second = Process(["alerts"], env, tmp_path / "second.log")
    processes.append(second)
    wait_for(lambda: second.says("standing by"), what="second engine standing by")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert _leader_pid(conn) is not None
        time.sleep(1.5)
        assert not second.says("alert engine leading")
        first.kill()
        killed_at = time.monotonic()
        wait_for(lambda: second.says("alert engine leading"), timeout=5,
                 what="the standby leading")
        print(f"takeover after {time.monotonic() - killed_at:.2f} s")
        device, citizen = enrolled(conn)
        store(conn, bp_rows(device, citizen, datetime.now(UTC), 1, systolic=200))
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM alerts WHERE citizen_id = %s "
                                "AND rule = 'threshold:blood_pressure'", citizen) == 1,
                 timeout=5, what="the new leader's alert")
        assert scalar(conn, "SELECT count(*) FROM evaluation_queue") == 0
