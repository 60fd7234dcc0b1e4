"""SQL of the evaluation: what the population's database holds, for the nothing-lost check.
Functions take a connection and never commit."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

Conn = psycopg.Connection[Any]

STORED_COUNTS = """
SELECT (SELECT count(*) FROM readings) AS readings,
       (SELECT count(*) FROM readings WHERE late) AS readings_late,
       (SELECT count(*) FROM readings WHERE quality = 'implausible') AS readings_implausible,
       (SELECT count(*) FROM device_events) AS events,
       (SELECT count(*) FROM device_events WHERE late) AS events_late,
       (SELECT count(*) FROM dead_letters) AS dead_letters"""

# Findings that raised or fed an alert (not the clearing ones), at their evaluation time.
RAISING_FINDINGS = """
SELECT citizen_id, rule, severity, evaluated_at FROM replay_findings
 WHERE run_id = %s AND NOT clears ORDER BY evaluated_at"""


def raising_findings(conn: Conn, run_id: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(RAISING_FINDINGS, (run_id,)).fetchall()


def stored_counts(conn: Conn) -> dict[str, int]:
    """Rows of readings (late, implausible), events (late) and dead letters."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(STORED_COUNTS).fetchone()
    assert row is not None
    return {key: int(value) for key, value in row.items()}
