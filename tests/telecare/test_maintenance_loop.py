"""The maintenance loop runs the jobs for real, and /ready reports how they went."""

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from api.app import create_app
from core.db import open_pool
from core.settings import Settings
from telecare.maintenance import maintain_once

NOW = datetime.now(UTC)


def _ready(dsn: str, now: datetime) -> dict[str, Any]:
    pool = open_pool(dsn, max_size=2)
    try:
        with TestClient(create_app(Settings(database_url=dsn, auth_required=False), pool=pool,
                                   clock=lambda: now)) as client:
            response = client.get("/ready")
            assert response.status_code == 200
            body: dict[str, Any] = response.json()
            return body
    finally:
        pool.close()


def test_maintenance_runs_and_ready_reports_each_job(fresh_database: str) -> None:
    outcomes = maintain_once(Settings(database_url=fresh_database), clock=lambda: NOW)
    assert outcomes and all(outcome.ok for outcome in outcomes)
    ready = _ready(fresh_database, NOW)
    assert ready["status"] == "ready"
    assert {job["job"] for job in ready["maintenance"]} == {o.job for o in outcomes}
    # Three hours later without another run: overdue, so degraded (and still serving).
    assert _ready(fresh_database, NOW + timedelta(hours=3))["status"] == "degraded"


def test_a_failing_job_makes_ready_degraded(fresh_database: str) -> None:
    maintain_once(Settings(database_url=fresh_database), clock=lambda: NOW)
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute("ALTER TABLE dead_letters RENAME TO dead_letters_moved")
    try:
        outcomes = maintain_once(Settings(database_url=fresh_database), clock=lambda: NOW)
        assert outcomes and not all(outcome.ok for outcome in outcomes)
        ready = _ready(fresh_database, NOW)
        failing = [job for job in ready["maintenance"] if job["failures"]]
        assert ready["status"] == "degraded" and failing[0]["last_error_sqlstate"] == "42P01"
    finally:
        with psycopg.connect(fresh_database, autocommit=True) as conn:
            conn.execute("ALTER TABLE dead_letters_moved RENAME TO dead_letters")


def test_maintain_forever_runs_the_jobs_and_stops_on_sigint(fresh_database: str) -> None:
    # compose.yaml's maintenance service: ingest logs in as its role and leaves the jobs to it.
    proc = subprocess.Popen([sys.executable, "-m", "telecare.cli", "maintain", "--forever"],
                            env={**os.environ, "TELECARE_DATABASE_URL": fresh_database},
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = ""
        while "maintenance:" not in line:
            line = proc.stderr.readline()
            assert line, "maintain --forever ended before running the jobs"
        assert "FAILED" not in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    with psycopg.connect(fresh_database) as conn:
        assert conn.execute("SELECT count(*) FROM maintenance_jobs").fetchone() != (0,)
