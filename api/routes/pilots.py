"""Pilots: project leads see the pseudonymised aggregates of the pilots they lead; administrators
see every pilot and manage them (docs/access.md, "Project leads").

Who gets what: administrators and project leads may look at pilots; every other role is
refused with 403 on every pilot route, whatever the id (the answer depends on the role alone,
so it tells nothing about which pilots exist). A project lead asking about a pilot they do not
lead gets the same 404 as for a pilot that does not exist. Changes are for administrators."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api import audit
from api.access import administers
from api.auth.errors import NotAllowed
from api.deps import LOCAL_OPERATOR, Caller, CallerDep, DbDep, NowDep, require_role
from api.problems import problem, responses
from api.schemas import NO_NUL, USERNAME_PATTERN, OptionalStoredTime
from pilots import service
from pilots.errors import PseudonymKeyMissing
from pilots.models import Aggregates, Enrolment, Pilot, Viewer

router = APIRouter(tags=["pilots"])

UsernamePath = Annotated[str, Path(pattern=USERNAME_PATTERN, max_length=100)]
EnrolmentId = Annotated[int, Path(ge=1, le=2**63 - 1)]


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PilotPublic(_Public):
    id: UUID
    name: str
    description: str
    starts_at: datetime
    ends_at: datetime | None


class PilotCreate(_Request):
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    description: str = Field(default="", max_length=2000, pattern=NO_NUL)
    starts_at: OptionalStoredTime = Field(default=None, description="default: now")
    ends_at: OptionalStoredTime = Field(default=None, description="exclusive; default: open")


class EnrolmentCreate(_Request):
    citizen_id: UUID
    valid_from: OptionalStoredTime = Field(default=None, description="default: now")
    valid_until: OptionalStoredTime = Field(default=None,
                                            description="exclusive; default: open")


class EnrolmentPublic(_Public):
    id: int
    citizen_id: UUID
    valid_from: datetime
    valid_until: datetime | None
    enrolled_by: str
    enrolled_at: datetime


class LeadPublic(_Public):
    username: str
    display_name: str
    added_at: datetime


def _viewer(caller: Caller) -> Viewer:
    """What the caller may see of pilots; NotAllowed for roles that see none."""
    # Compared by value: a request's caller is a copy of the local operator, not the object.
    if (caller.subject, caller.role) == (LOCAL_OPERATOR.subject, LOCAL_OPERATOR.role):
        return Viewer(user_id=None, everything=True)
    if administers(caller):
        return Viewer(user_id=UUID(caller.subject), everything=True)
    if caller.role == "project_lead":
        return Viewer(user_id=UUID(caller.subject), everything=False)
    raise NotAllowed(f"a {caller.role} sees no pilots")


def _pilot(p: Pilot) -> PilotPublic:
    return PilotPublic.model_validate(p)


@router.get("/pilots", response_model=list[PilotPublic], responses=responses(403))
def pilots(conn: DbDep, caller: CallerDep) -> list[PilotPublic]:
    """The pilots the caller leads (administrators: every pilot)."""
    return [_pilot(p) for p in service.pilots(conn, _viewer(caller))]


@router.post("/pilots", response_model=PilotPublic, status_code=201,
             responses=responses(400, 403, 409, 422))
def create_pilot(body: PilotCreate, conn: DbDep, caller: CallerDep, now: NowDep) -> PilotPublic:
    """A new pilot; administrators only. 409 for a name already taken."""
    require_role(caller, "administrator")
    return _pilot(service.create_pilot(conn, body.name, body.description, body.starts_at or now,
                                       body.ends_at, caller.subject, now))


@router.get("/pilots/{pilot_id}", response_model=PilotPublic, responses=responses(403, 404, 422))
def pilot(pilot_id: UUID, conn: DbDep, caller: CallerDep) -> PilotPublic:
    """The pilot, for its leads and administrators."""
    return _pilot(service.pilot(conn, _viewer(caller), pilot_id))


@router.get("/pilots/{pilot_id}/aggregates", response_model=Aggregates,
            responses=responses(403, 404, 422))
def aggregates(request: Request, pilot_id: UUID, conn: DbDep, caller: CallerDep, now: NowDep,
               from_day: Annotated[date | None, Query(alias="from", description=(
                   "first local day; default: the pilot's start"))] = None,
               to_day: Annotated[date | None, Query(alias="to", description=(
                   "last local day, included; default: today or the pilot's end"))] = None,
               ) -> Aggregates | JSONResponse:
    """The pilot's pseudonymised aggregates over local days: citizens enrolled, readings and
    adherence per metric, alerts per rule and severity, time to acknowledge, outcomes, and a
    row per citizen under a pseudonym. Counts of 1-4 are "<5". 503 `pseudonym_key_missing`
    when no pseudonym key is configured."""
    viewer = _viewer(caller)
    try:
        return service.aggregates(conn, viewer, pilot_id, request.app.state.pseudonym_key,
                                  from_day, to_day, now)
    except PseudonymKeyMissing as exc:
        return problem(503, str(exc), code=exc.code)


@router.get("/pilots/{pilot_id}/leads", response_model=list[LeadPublic],
            responses=responses(403, 404, 422))
def leads(pilot_id: UUID, conn: DbDep, caller: CallerDep) -> list[LeadPublic]:
    """Who leads the pilot; administrators only."""
    require_role(caller, "administrator")
    return [LeadPublic.model_validate(lead) for lead in service.leads(conn, pilot_id)]


@router.put("/pilots/{pilot_id}/leads/{username}", status_code=204, response_class=Response,
            responses=responses(403, 404, 422))
def add_lead(pilot_id: UUID, username: UsernamePath, conn: DbDep, caller: CallerDep,
             now: NowDep) -> Response:
    """The project lead leads the pilot (again: nothing changes); administrators only. 422 for
    a user who is not a project lead."""
    require_role(caller, "administrator")
    service.add_lead(conn, pilot_id, username, caller.subject, now)
    return Response(status_code=204)


@router.delete("/pilots/{pilot_id}/leads/{username}", status_code=204, response_class=Response,
               responses=responses(403, 404, 422))
def remove_lead(pilot_id: UUID, username: UsernamePath, conn: DbDep,
                caller: CallerDep) -> Response:
    """The user no longer leads the pilot; administrators only."""
    require_role(caller, "administrator")
    service.remove_lead(conn, pilot_id, username)
    return Response(status_code=204)


def _enrolment(e: Enrolment) -> EnrolmentPublic:
    return EnrolmentPublic.model_validate(e)


@router.get("/pilots/{pilot_id}/enrolments", response_model=list[EnrolmentPublic],
            responses=responses(403, 404, 422))
def enrolments(pilot_id: UUID, conn: DbDep, caller: CallerDep,
               now: NowDep) -> list[EnrolmentPublic]:
    """Which citizens take part, when; administrators only (this names citizens, each recorded
    in the audit log)."""
    require_role(caller, "administrator")
    found = service.enrolments(conn, pilot_id)
    audit.searched(conn, caller, "pilots", (e.citizen_id for e in found), now)
    return [_enrolment(e) for e in found]


@router.post("/pilots/{pilot_id}/enrolments", response_model=EnrolmentPublic, status_code=201,
             responses=responses(400, 403, 404, 409, 422))
def enrol(pilot_id: UUID, body: EnrolmentCreate, conn: DbDep, caller: CallerDep,
          now: NowDep) -> EnrolmentPublic:
    """The citizen takes part from valid_from until valid_until, within the pilot's period;
    administrators only. 409 when that overlaps an enrolment the citizen has in the pilot."""
    require_role(caller, "administrator")
    enrolment = service.enrol(conn, pilot_id, body.citizen_id, body.valid_from or now,
                              body.valid_until, caller.subject, now)
    audit.record(conn, caller, "change", "pilots", [enrolment.citizen_id], now)
    return _enrolment(enrolment)


@router.delete("/pilots/{pilot_id}/enrolments/{enrolment_id}", status_code=204,
               response_class=Response, responses=responses(403, 404, 422))
def end_enrolment(pilot_id: UUID, enrolment_id: EnrolmentId, conn: DbDep, caller: CallerDep,
                  now: NowDep) -> Response:
    """The citizen leaves the pilot now (one not yet started is removed); administrators only."""
    require_role(caller, "administrator")
    ended = service.end_enrolment(conn, pilot_id, enrolment_id, now)
    audit.record(conn, caller, "change", "pilots", [ended.citizen_id], now)
    return Response(status_code=204)
