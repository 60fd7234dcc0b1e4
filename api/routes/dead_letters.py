"""What ingest could not store, summarised by reason."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CallerDep, DbDep, NowDep, require_role
from api.params import OptionalTime
from api.problems import responses
from api.schemas import DeadLetterPublic, DeadLetterReason, DeadLetterReport
from devices.dead_letters import dead_letter_summary, recent_dead_letters

router = APIRouter(tags=["ingest"])


@router.get("/dead-letters", response_model=DeadLetterReport, responses=responses(403, 422))
def dead_letters(
    conn: DbDep,
    caller: CallerDep,
    now: NowDep,
    since: Annotated[OptionalTime, Query(description="default: the last 24 hours")] = None,
    limit: Annotated[int, Query(ge=0, le=1000)] = 50,
) -> DeadLetterReport:
    """Counts by reason since `since`, and the most recent dead letters (payloads not
    included); administrators only (device ids and reasons of every citizen's devices)."""
    require_role(caller, "administrator")
    since = since or now - timedelta(hours=24)
    by_reason = [DeadLetterReason(**r) for r in dead_letter_summary(conn, since)]
    recent = [DeadLetterPublic(**r) for r in recent_dead_letters(conn, since, limit)]
    return DeadLetterReport(since=since, total=sum(r.count for r in by_reason),
                            by_reason=by_reason, recent=recent)
