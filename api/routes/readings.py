"""A citizen's readings of one metric over a time range, raw or in time buckets."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from api.deps import DbDep, NowDep
from api.schemas import BucketPublic, MetricPublic, ReadingPublic, ReadingsPublic
from core.errors import InvalidInput
from devices import repository
from devices.catalogue import METRICS
from devices.errors import CitizenNotFound

router = APIRouter(tags=["readings"])

_BUCKET = re.compile(r"^(\d{1,6})(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_BUCKETS = 10_000
DEFAULT_RANGE = timedelta(days=7)
# Buckets are aligned to midnight UTC, so the same query gives the same buckets every time.
BUCKET_ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)


def parse_bucket(text: str) -> timedelta:
    """'15m', '1h', '1d' -> timedelta; anything else is invalid input."""
    match = _BUCKET.match(text)
    if match is None or int(match.group(1)) == 0:
        raise InvalidInput(f"bucket must look like 30s, 15m, 1h or 1d, not {text!r}")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


@router.get("/metrics", response_model=list[MetricPublic])
def list_metrics() -> list[MetricPublic]:
    """The measurement catalogue: codes, UCUM units, LOINC and IEEE 11073 codes, ranges."""
    return [MetricPublic.model_validate(m, from_attributes=True) for m in METRICS.values()]


@router.get("/citizens/{citizen_id}/readings", response_model=ReadingsPublic,
            response_model_exclude_none=True)
def citizen_readings(
    citizen_id: UUID,
    conn: DbDep,
    now: NowDep,
    metric: Annotated[str, Query(description="metric code from /metrics")],
    start: Annotated[datetime | None, Query(description="inclusive, RFC 3339")] = None,
    end: Annotated[datetime | None, Query(description="exclusive, RFC 3339")] = None,
    bucket: Annotated[str | None, Query(description="e.g. 1h: min/mean/max/count per bucket")]
    = None,
    limit: Annotated[int, Query(ge=1, le=50_000)] = 10_000,
) -> ReadingsPublic:
    """Raw readings by measured time, or aggregated into buckets when `bucket` is given."""
    if metric not in METRICS:
        raise InvalidInput(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    end = _aware(end or now, "end")
    start = _aware(start or end - DEFAULT_RANGE, "start")
    if start >= end:
        raise InvalidInput("start must be before end")
    if not repository.citizen_exists(conn, citizen_id):
        raise CitizenNotFound(f"no citizen {citizen_id}")
    page = ReadingsPublic(citizen_id=citizen_id, metric=metric, unit=METRICS[metric].ucum,
                          start=start, end=end, bucket_seconds=None)
    if bucket is None:
        rows = repository.readings_raw(conn, citizen_id, metric, start, end, limit)
        return page.model_copy(update={"readings": [ReadingPublic(**r) for r in rows]})
    width = parse_bucket(bucket)
    if (end - start) / width > MAX_BUCKETS:
        raise InvalidInput(f"more than {MAX_BUCKETS} buckets; widen the bucket or the range")
    rows = repository.readings_bucketed(conn, citizen_id, metric, start, end, width,
                                        BUCKET_ORIGIN)
    return page.model_copy(update={"bucket_seconds": int(width.total_seconds()),
                                   "buckets": [BucketPublic(**r) for r in rows]})


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise InvalidInput(f"{name} needs a UTC offset, e.g. 2026-11-23T08:00:00+01:00")
    return moment
