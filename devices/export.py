"""SQL of exports of a citizen's readings grouped into observations (the FHIR export, api/fhir.py).
Functions take a connection and ids the caller's relation has already cleared; they never commit.

An observation is the readings of one device at one measured time and sequence number whose
metrics the caller groups under one name (systolic and diastolic pressure as one blood
pressure). Pages are keyset pages in the order (measured time, device, sequence number,
observation name), which is unique per observation: a walk over the pages meets every
observation exactly once, even while newer readings arrive."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import psycopg
from psycopg.rows import dict_row, tuple_row

Conn = psycopg.Connection[Any]


class ObservationKey(NamedTuple):
    """Where an observation stands in the export's order; a page starts after one."""

    measured_at: datetime
    device_id: str
    seq: int
    observation: str


# Each wanted metric takes at most `limit` of its own readings after the key, through the
# (citizen_id, metric, measured_at) index: a metric's readings are in the order of their
# observations, so the first `limit` observations after the key are among those candidates. A
# page costs at most metrics x limit rows however long the range, not a sort of all of it.
OBSERVATION_PAGE = """
WITH wanted (metric, observation) AS (
    SELECT * FROM unnest(%(metrics)s::text[], %(observations)s::text[])
), candidates AS (
    SELECT c.*, w.observation
      FROM wanted w
     CROSS JOIN LATERAL (
        SELECT r.measured_at, r.device_id, r.seq, r.metric, r.value, r.received_at, r.late,
               r.delay_cause, r.quality, r.clock_suspect
          FROM readings r
         WHERE r.citizen_id = %(citizen_id)s AND r.metric = w.metric
           AND r.measured_at >= greatest(%(start)s::timestamptz, %(after_at)s::timestamptz)
           AND r.measured_at < %(end)s
           AND (%(after_at)s::timestamptz IS NULL
                OR (r.measured_at, r.device_id, r.seq, w.observation)
                   > (%(after_at)s::timestamptz, %(after_device)s::text, %(after_seq)s::numeric,
                      %(after_observation)s::text))
         ORDER BY r.measured_at, r.device_id, r.seq
         LIMIT %(limit)s) c
), page AS (
    SELECT DISTINCT measured_at, device_id, seq, observation
      FROM candidates
     ORDER BY measured_at, device_id, seq, observation
     LIMIT %(limit)s
)
SELECT c.measured_at, c.device_id, c.seq, c.observation, c.metric, c.value, c.received_at,
       c.late, c.delay_cause, c.quality, c.clock_suspect,
       d.kind AS device_kind, d.model AS device_model, d.serial AS device_serial
  FROM candidates c
  JOIN page p USING (measured_at, device_id, seq, observation)
  LEFT JOIN devices d ON d.id = c.device_id
 ORDER BY c.measured_at, c.device_id, c.seq, c.observation, c.metric"""
CITIZEN_NAME = "SELECT display_name FROM citizens WHERE id = %s"


def observation_page(conn: Conn, citizen_id: UUID, observations: Mapping[str, str],
                     start: datetime, end: datetime, after: ObservationKey | None,
                     limit: int) -> list[dict[str, Any]]:
    """The readings of the first `limit` observations measured in [start, end) after `after`,
    in the export's order, each row with its observation name and its device's kind, model and
    serial. `observations` maps each wanted metric to the name of the observation it is part
    of; readings of other metrics are left out."""
    params = {
        "citizen_id": citizen_id, "metrics": list(observations),
        "observations": list(observations.values()), "start": start, "end": end,
        "after_at": None if after is None else after.measured_at,
        "after_device": None if after is None else after.device_id,
        "after_seq": None if after is None else after.seq,
        "after_observation": None if after is None else after.observation, "limit": limit}
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(OBSERVATION_PAGE, params).fetchall()


def citizen_name(conn: Conn, citizen_id: UUID) -> str | None:
    """The name the citizen is registered under (identity: only for those who may see it)."""
    with conn.cursor(row_factory=tuple_row) as cur:
        row = cur.execute(CITIZEN_NAME, (citizen_id,)).fetchone()
    return None if row is None else str(row[0])
