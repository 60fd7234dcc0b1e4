"""A citizen's readings of one metric over a time range, raw or in time buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from api import access
from api.deps import CallerDep, DbDep, NowDep
from api.errors import EmptyRange, TooManyBuckets
from api.params import MetricCode, OptionalBucket, OptionalTime
from api.problems import responses
from api.schemas import BucketPublic, MetricPublic, ReadingPublic, ReadingsPublic
from devices import repository
from devices.catalogue import METRICS

router = APIRouter(tags=["readings"])

MAX_BUCKETS = 10_000
DEFAULT_RANGE = timedelta(days=7)
# Buckets are aligned to midnight UTC, so the same query gives the same buckets every time.
BUCKET_ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)


@router.get("/metrics", response_model=list[MetricPublic], responses=responses())
def list_metrics() -> list[MetricPublic]:
    """The measurement catalogue: codes, UCUM units, LOINC and IEEE 11073 codes, ranges."""
    return [MetricPublic.model_validate(m, from_attributes=True) for m in METRICS.values()]


@router.get("/citizens/{citizen_id}/readings", response_model=ReadingsPublic,
            response_model_exclude_none=True, responses=responses(404, 422))
def citizen_readings(
    citizen_id: UUID,
    conn: DbDep,
    caller: CallerDep,
    now: NowDep,
    metric: Annotated[MetricCode, Query(description="metric code from /v1/metrics")],
    start: Annotated[OptionalTime, Query(
        description="inclusive; default: 7 days before end; must be before end")] = None,
    end: Annotated[OptionalTime, Query(description="exclusive; default: now")] = None,
    bucket: Annotated[OptionalBucket, Query(
        description=f"e.g. 1h: min/mean/max/count per bucket, at most {MAX_BUCKETS} buckets "
                    "in the range")] = None,
    limit: Annotated[int, Query(ge=1, le=50_000)] = 10_000,
    include_implausible: Annotated[bool, Query(
        description="count readings marked implausible in buckets too")] = False,
) -> ReadingsPublic:
    """Raw readings by measured time, or aggregated into buckets when `bucket` is given; a
    relative sees only what was measured while the proxy is in force."""
    end = end or now
    start = start or end - DEFAULT_RANGE
    if start >= end:
        raise EmptyRange("start must be before end")
    if bucket is not None and (end - start) / bucket > MAX_BUCKETS:
        raise TooManyBuckets(f"more than {MAX_BUCKETS} buckets; widen the bucket or the range")
    window = access.citizen(conn, caller, citizen_id, "readings", now)
    page = ReadingsPublic(citizen_id=citizen_id, metric=metric, unit=METRICS[metric].ucum,
                          start=start, end=end)
    seen_start, seen_end = window.clip(start, end)
    if bucket is None:
        rows = (repository.readings_raw(conn, citizen_id, metric, seen_start, seen_end, limit)
                if seen_start < seen_end else [])
        return page.model_copy(update={"readings": [ReadingPublic(**r) for r in rows]})
    rows = (repository.readings_bucketed(conn, citizen_id, metric, seen_start, seen_end, bucket,
                                         BUCKET_ORIGIN, include_implausible=include_implausible)
            if seen_start < seen_end else [])
    return page.model_copy(update={"bucket_seconds": int(bucket.total_seconds()),
                                   "buckets": [BucketPublic(**r) for r in rows]})
