"""A citizen's readings as a FHIR R4 searchset Bundle (docs/fhir.md), one keyset page at a time."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from api import access, fhir
from api.auth.service import TokenPolicy
from api.deps import CallerDep, DbDep, NowDep
from api.params import MetricCode, OptionalTime
from api.problems import responses
from core.clock import FAR_FUTURE, FAR_PAST
from devices import export

router = APIRouter(tags=["fhir"])

DEFAULT_COUNT = 100
MAX_COUNT = 1000


class FhirResponse(JSONResponse):
    media_type = fhir.FHIR_JSON


_BUNDLE = {
    "description": "A FHIR R4 Bundle of type searchset: the page's Observations (search mode "
                   "match), the Devices that measured them and the Patient (mode include). A "
                   "`next` link continues the walk; none means this was the last page.",
    "content": {fhir.FHIR_JSON: {"schema": {
        "type": "object", "required": ["resourceType", "type", "entry"],
        "properties": {"resourceType": {"const": "Bundle"}, "type": {"const": "searchset"},
                       "link": {"type": "array"}, "entry": {"type": "array"}}}}},
}


@router.get("/citizens/{citizen_id}/fhir/Observation", response_class=FhirResponse,
            responses={200: _BUNDLE, **responses(404, 422)})
def citizen_observations(
    request: Request,
    citizen_id: UUID,
    conn: DbDep,
    caller: CallerDep,
    now: NowDep,
    metric: Annotated[list[MetricCode] | None, Query(
        description="metric codes from /v1/metrics (repeat for several); systolic_bp or "
                    "diastolic_bp gives the whole blood pressure; default: every metric")] = None,
    from_: Annotated[OptionalTime, Query(
        alias="from", description="measured at or after (inclusive); default: the first")] = None,
    until: Annotated[OptionalTime, Query(
        description="measured before (exclusive); default: no end. Not after `from`: an empty "
                    "range, which no reading is in")] = None,
    count: Annotated[int, Query(
        alias="_count", ge=1, le=MAX_COUNT,
        description="Observations per page (Devices and the Patient come on top)")] = DEFAULT_COUNT,
    page_after: Annotated[str | None, Query(
        alias="_cursor", pattern=fhir.CURSOR_PATTERN,
        description="where the page starts: copy it from the previous page's `next` link")] = None,
) -> FhirResponse:
    """The citizen's readings as FHIR Observations (vital-signs profiles, LOINC, UCUM), oldest
    first; named for those who work with the citizen and the citizen, pseudonymous for a
    relative, who also sees only what was measured while the proxy is in force."""
    start, end = from_ or FAR_PAST, until or FAR_FUTURE
    after = fhir.read_cursor(page_after) if page_after is not None else None
    window = access.citizen(conn, caller, citizen_id, "readings", now, export=True)
    seen_start, seen_end = window.clip(start, end)
    rows: list[dict[str, Any]] = []
    if seen_start < seen_end:
        rows = export.observation_page(conn, citizen_id, fhir.observations_of(metric),
                                       seen_start, seen_end, after, count + 1)
    groups = fhir.group(rows)
    next_url = None
    if len(groups) > count:
        groups = groups[:count]
        token = fhir.cursor(fhir.key_of(groups[-1][0]))
        next_url = str(request.url.include_query_params(_cursor=token))
    if fhir.sees_identity(caller):
        naming = fhir.Naming.named(citizen_id, export.citizen_name(conn, citizen_id))
    else:
        policy: TokenPolicy = request.app.state.token_policy
        naming = fhir.Naming.pseudonymous(citizen_id, caller, policy.key)
    return FhirResponse(fhir.bundle(groups, naming, now, str(request.url), next_url))
