"""The maintenance loop runs the jobs for real, and /ready reports how they went."""

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
