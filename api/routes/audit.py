"""The audit record over the API: a citizen lists the look-ups in their own data, an
administrator everything for a citizen or a user (api/audit.py, docs/access.md)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from api import access, audit
from api.deps import CallerDep, DbDep, NowDep, require_role
from api.params import OptionalTime
from api.problems import responses
from api.schemas import AuditEntryPublic
from core.clock import FAR_FUTURE, FAR_PAST

router = APIRouter(tags=["audit"])

Since = Annotated[OptionalTime, Query(description="from this time (inclusive)")]
Until = Annotated[OptionalTime, Query(description="until this time (exclusive)")]
Before = Annotated[int | None, Query(ge=1, le=2**62, description="page on: the last id seen")]
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get("/citizens/{citizen_id}/audit", response_model=list[AuditEntryPublic],
            responses=responses(404, 422))
def citizen_audit(citizen_id: UUID, conn: DbDep, caller: CallerDep, now: NowDep,
                  since: Since = None, until: Until = None, before: Before = None,
                  limit: Limit = 100) -> list[AuditEntryPublic]:
    """Who looked at the citizen's data, newest first: for the citizen themselves (when, in
    which role, what and why) and for administrators (also who and through which route)."""
    full = access.audit_trail(conn, caller, citizen_id, now)
    rows = _entries(conn, citizen_id, None, since, until, before, limit)
    return [AuditEntryPublic.model_validate(row if full else _without_who(row)) for row in rows]


@router.get("/audit", response_model=list[AuditEntryPublic], responses=responses(403, 422))
def audit_log(conn: DbDep, caller: CallerDep, now: NowDep,
              citizen_id: Annotated[UUID | None, Query(description="one citizen's")] = None,
              user_id: Annotated[UUID | None, Query(description="one user's looks")] = None,
              since: Since = None, until: Until = None, before: Before = None,
              limit: Limit = 100) -> list[AuditEntryPublic]:
    """Every recorded look and change, newest first, for a citizen or a user; administrators
    only. Reading it is itself recorded."""
    require_role(caller, "administrator")
    rows = _entries(conn, citizen_id, user_id, since, until, before, limit)
    audit.searched(conn, caller, "audit", (r.citizen_id for r in rows if r.citizen_id), now)
    return [AuditEntryPublic.model_validate(row) for row in rows]


def _entries(conn: DbDep, citizen_id: UUID | None, user_id: UUID | None,
             since: OptionalTime, until: OptionalTime, before: int | None,
             limit: int) -> list[audit.AuditEntry]:
    start, end = since or FAR_PAST, until or FAR_FUTURE
    if start >= end:
        return []  # nothing was recorded in an empty period
    return audit.entries(conn, citizen=citizen_id, user_id=user_id, since=start, until=end,
                         before=before, limit=limit)


def _without_who(entry: audit.AuditEntry) -> dict[str, object]:
    return {"id": entry.id, "at": entry.at, "role": entry.role, "action": entry.action,
            "what": entry.what, "purpose": entry.purpose, "citizen_id": entry.citizen_id}
