"""Migration 0021: alerts still open under the per-component names take the per-measurement
name, so that the next finding repeats them instead of opening a second alert beside them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import psycopg

from alerts import service
from alerts.models import Severity
from core.migrations import migrate, migrations_dir
from tests.alerts.conftest import NOW, finding, minutes, new_citizen_in, new_team
from tests.conftest import ADMIN_DSN, empty_database

OLD = ("threshold:systolic_bp", "threshold:diastolic_bp", "implausible:spo2")


def _open(conn: psycopg.Connection[Any], citizen: Any, team: Any,
          *alerts: tuple[str, Severity]) -> None:
    for step, (rule, severity) in enumerate(alerts):
        with conn.transaction():
            service.record_findings(conn, citizen, team, [finding(rule, severity)],
                                    NOW + minutes(step))


def _rules(conn: psycopg.Connection[Any], citizen: Any) -> list[tuple[str, str, str]]:
    return conn.execute("SELECT rule, severity, state FROM alerts WHERE citizen_id = %s "
                        "ORDER BY rule, id", (citizen,)).fetchall()


def test_open_alerts_take_the_measurement_names_and_none_is_resolved(tmp_path: Path) -> None:
    before = tmp_path / "before"
    before.mkdir()
    for path in migrations_dir().glob("*.sql"):
        if int(path.name[:4]) < 21:  # the schema as it was before
            shutil.copy(path, before)
    with empty_database(ADMIN_DSN) as dsn:
        migrate(dsn, storage="postgres", directory=before)
        with psycopg.connect(dsn, autocommit=True) as conn:
            team = new_team(conn)
            both, one, resolved = (new_citizen_in(conn, team) for _ in range(3))
            _open(conn, both, team, ("threshold:systolic_bp", Severity.YELLOW),
                  ("threshold:diastolic_bp", Severity.RED), ("implausible:spo2", Severity.YELLOW))
            _open(conn, one, team, ("threshold:diastolic_bp", Severity.YELLOW))
            _open(conn, resolved, team, ("threshold:systolic_bp", Severity.RED))
            conn.execute("UPDATE alerts SET state = 'resolved', resolved_at = %s "
                         "WHERE citizen_id = %s", (NOW, resolved))
        assert "0021_one_alert_per_measurement" in migrate(dsn, storage="postgres")
        with psycopg.connect(dsn, autocommit=True) as conn:
            # The worse takes the name; the other stays open under its old one.
            assert _rules(conn, both) == [("implausible:pulse_oximetry", "yellow", "open"),
                                          ("threshold:blood_pressure", "red", "open"),
                                          ("threshold:systolic_bp", "yellow", "open")]
            assert _rules(conn, one) == [("threshold:blood_pressure", "yellow", "open")]
            assert _rules(conn, resolved) == [("threshold:systolic_bp", "red", "resolved")]
