"""SQL of personal baselines (migrations/0019): which citizens are due for retraining, the alert
spans that baselines leave out, and the baselines themselves, stored and loaded per batch."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerts import context_repository
from alerts.baselines import AlertSpan
from alerts.context_repository import Conn
from anomaly.baseline import Baseline
from core import locks

log = logging.getLogger(__name__)

# Citizens with a plan in force whose baselines are missing or the oldest, due first.
DUE = """
SELECT p.citizen_id
  FROM (SELECT DISTINCT citizen_id FROM citizen_plans WHERE valid @> %(now)s) p
  LEFT JOIN (SELECT citizen_id, min(trained_at) AS trained_at FROM anomaly_baselines
              GROUP BY citizen_id) b ON b.citizen_id = p.citizen_id
 WHERE (b.trained_at IS NULL OR b.trained_at <= %(before)s)
   AND p.citizen_id <> ALL(%(skip)s)
 ORDER BY b.trained_at NULLS FIRST, p.citizen_id
 LIMIT %(limit)s"""
ALERT_SPANS = """
SELECT citizen_id, rule, first_measured_at, last_measured_at, resolved_at, outcome
  FROM alerts
 WHERE citizen_id = ANY(%(citizens)s) AND (resolved_at IS NULL OR resolved_at > %(since)s)"""
# What is measured from here on is still to be evaluated (queued, or parked until a requeue): a
# baseline must not learn it first.
QUEUED_SINCE = """
SELECT citizen_id, min(measured_at) AS since
  FROM (SELECT citizen_id, measured_at FROM evaluation_queue
         WHERE citizen_id = ANY(%(citizens)s)
        UNION ALL
        SELECT citizen_id, measured_at FROM evaluation_failures
         WHERE citizen_id = ANY(%(citizens)s)) pending
 GROUP BY citizen_id"""
UPSERT = """
INSERT INTO anomaly_baselines (citizen_id, series, trained_at, rows, excluded, first_at,
                               trained_through, learning_until, state, parameters)
VALUES (%(citizen_id)s, %(series)s, %(trained_at)s, %(rows)s, %(excluded)s, %(first_at)s,
        %(trained_through)s, %(learning_until)s, %(state)s, %(parameters)s)
ON CONFLICT (citizen_id, series) DO UPDATE
   SET trained_at = EXCLUDED.trained_at, rows = EXCLUDED.rows, excluded = EXCLUDED.excluded,
       first_at = EXCLUDED.first_at, trained_through = EXCLUDED.trained_through,
       learning_until = EXCLUDED.learning_until, state = EXCLUDED.state,
       parameters = EXCLUDED.parameters"""
# A series the citizen's plans no longer learn.
DELETE_OTHERS = """
DELETE FROM anomaly_baselines WHERE citizen_id = %(citizen_id)s AND series <> ALL(%(series)s)"""
STILL_PROCESSED = "SELECT id FROM citizens WHERE id = ANY(%(citizens)s) AND discharged_at IS NULL"
LOAD = """
SELECT citizen_id, series, trained_at, rows, excluded, first_at, trained_through, learning_until,
       state, parameters
  FROM anomaly_baselines WHERE citizen_id = ANY(%(citizens)s) ORDER BY citizen_id, series"""


def due(conn: Conn, now: datetime, before: datetime, limit: int,
        skip: Collection[UUID] = ()) -> list[UUID]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(DUE, {"now": now, "before": before, "limit": limit, "skip": list(skip)})
        return [row["citizen_id"] for row in cur.fetchall()]


def alert_spans(conn: Conn, citizens: Sequence[UUID], since: datetime
                ) -> dict[UUID, list[AlertSpan]]:
    """Each citizen's alerts open at or after `since`."""
    spans: dict[UUID, list[AlertSpan]] = defaultdict(list)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(ALERT_SPANS, {"citizens": list(citizens), "since": since})
        for row in cur.fetchall():
            spans[row["citizen_id"]].append(AlertSpan(
                row["rule"], row["first_measured_at"], row["last_measured_at"],
                row["resolved_at"], row["outcome"]))
    return spans


def queued_since(conn: Conn, citizens: Sequence[UUID]) -> dict[UUID, datetime]:
    """The earliest measured time of each citizen's items still to be evaluated (queued or
    parked)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(QUEUED_SINCE, {"citizens": list(citizens)})
        return {row["citizen_id"]: row["since"] for row in cur.fetchall()}


def _row(citizen: UUID, baseline: Baseline) -> dict[str, Any]:
    return {"citizen_id": citizen, "series": baseline.series, "trained_at": baseline.trained_at,
            "rows": baseline.rows, "excluded": baseline.excluded, "first_at": baseline.first_at,
            "trained_through": baseline.trained_through,
            "learning_until": baseline.learning_until,
            "state": Jsonb(state) if (state := baseline.state) is not None else None,
            "parameters": (Jsonb(dict(baseline.parameters))
                           if baseline.parameters is not None else None)}


def save(conn: Conn, trained: Mapping[UUID, Mapping[str, Baseline]]) -> set[UUID]:
    """Replace each citizen's baselines with these (a series not among them is deleted); the
    citizens saved. One discharged (or erased) since her history was read is left out: an
    erasure holds the citizen's erasure lock until it commits, so after waiting for it the
    check sees it (each statement reads what has committed)."""
    if not trained:
        return set()
    with conn.cursor() as cur:
        cur.execute(context_repository.LOCK_AGAINST_ERASURE,
                    {"class": locks.CITIZEN_ERASURE_CLASS, "citizens": sorted(trained)})
        cur.execute(STILL_PROCESSED, {"citizens": list(trained)})
        kept = {row[0] for row in cur.fetchall()}
        for citizen, baselines in trained.items():
            if citizen not in kept:
                continue
            cur.execute(DELETE_OTHERS, {"citizen_id": citizen, "series": list(baselines)})
            if baselines:
                cur.executemany(UPSERT, [_row(citizen, b) for b in baselines.values()])
    return kept


def baseline_from_row(row: Mapping[str, Any]) -> Baseline:
    """The stored baseline; one whose state this version cannot read (another state version, a
    configuration it does not know) as learning, so that it raises nothing and blocks no batch
    until the next retraining rewrites it."""
    fields = {"series": row["series"], "trained_at": row["trained_at"], "rows": row["rows"],
              "excluded": row["excluded"], "first_at": row["first_at"],
              "trained_through": row["trained_through"],
              "learning_until": row["learning_until"], "parameters": row["parameters"]}
    try:
        return Baseline.restored(row["state"], **fields)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("citizen %s: baseline %s unreadable (%s); taken as learning",
                    row["citizen_id"], row["series"], exc)
        return Baseline.restored(None, **fields)


def load(conn: Conn, citizens: Sequence[UUID]) -> dict[UUID, dict[str, Baseline]]:
    """Each citizen's baselines by series (citizens without any are missing)."""
    found: dict[UUID, dict[str, Baseline]] = defaultdict(dict)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(LOAD, {"citizens": list(citizens)})
        for row in cur.fetchall():
            found[row["citizen_id"]][row["series"]] = baseline_from_row(row)
    return dict(found)
