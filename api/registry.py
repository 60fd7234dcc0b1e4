"""Enrolment and discharge of citizens, and devices given and taken back: the registry's
changes as administrators make them over the API (docs/access.md). Each is recorded in the
audit log by the route that calls it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row

from alerts import service as alerts_service
from core.errors import Conflict
from devices import service as devices_service
from devices.errors import CitizenNotFound

Conn = psycopg.Connection[Any]

_CITIZENS = """
SELECT c.id, c.display_name, c.conditions, c.care_team_id, c.created_at, c.discharged_at
  FROM citizens c
 WHERE {filter}
 ORDER BY c.id
 LIMIT %(limit)s"""
_LOCK_CITIZEN = "SELECT discharged_at FROM citizens WHERE id = %s FOR UPDATE"
_DISCHARGE = "UPDATE citizens SET discharged_at = %s WHERE id = %s"
_HELD_DEVICES = """
SELECT device_id FROM device_pairings WHERE citizen_id = %s AND upper_inf(valid) ORDER BY 1"""


class AlreadyDischarged(Conflict):
    code = "citizen_discharged"


def citizens(conn: Conn, *, citizen_id: UUID | None = None,
             within: tuple[sql.Composable, dict[str, Any]] | None = None,
             after: UUID | None = None, limit: int = 1) -> list[dict[str, Any]]:
    """Citizens in id order: one, or a page after `after`; with `within` (the relation's
    subquery and its parameters), only those it holds."""
    conditions: list[sql.Composable] = [sql.SQL("true")]
    params: dict[str, Any] = {"citizen_id": citizen_id, "after": after, "limit": limit}
    if within is not None:
        conditions.append(sql.SQL("c.id IN (SELECT v.citizen_id FROM ({}) v)").format(within[0]))
        params.update(within[1])
    if citizen_id is not None:
        conditions.append(sql.SQL("c.id = %(citizen_id)s"))
    if after is not None:
        conditions.append(sql.SQL("c.id > %(after)s"))
    query = sql.SQL(_CITIZENS).format(filter=sql.SQL(" AND ").join(conditions))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


def enrol(conn: Conn, display_name: str, conditions: Sequence[str],
          care_team_id: UUID | None) -> UUID:
    """A new citizen, in a care team when one is given (TeamNotFound otherwise)."""
    with conn.transaction():
        citizen_id = devices_service.enrol_citizen(conn, display_name, conditions)
        if care_team_id is not None:
            alerts_service.assign_citizen(conn, citizen_id, care_team_id)
    return citizen_id


def discharge(conn: Conn, citizen_id: UUID, at: datetime) -> list[str]:
    """End the citizen's telecare at `at`: every device they hold is taken back (refused, and
    nothing changed, when a device has data measured since `at`), every plan in force ends, and
    the record is kept. Returns the devices taken back."""
    with conn.transaction():
        with conn.cursor(row_factory=tuple_row) as cur:
            row = cur.execute(_LOCK_CITIZEN, (citizen_id,)).fetchone()
            if row is None:
                raise CitizenNotFound(f"no citizen {citizen_id}")
            if row[0] is not None:
                raise AlreadyDischarged(f"citizen {citizen_id} was discharged at "
                                        f"{row[0].isoformat()}")
            devices = [device for (device,) in cur.execute(_HELD_DEVICES, (citizen_id,))]
        for device in devices:
            devices_service.unpair_device(conn, device, at)
        for plan in alerts_service.plans_in_force(conn, [citizen_id], at).get(citizen_id, []):
            alerts_service.end_plan(conn, citizen_id, plan.plan, at)
        conn.execute(_DISCHARGE, (at, citizen_id))
    return devices
