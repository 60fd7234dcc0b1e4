"""Who works in a care team, and the proxies (fuldmagter) a citizen gives relatives: the
relations api/access.py checks. Every change is in the audit log: a proxy's as a change of the
citizen's access, a team membership's without a citizen (it names none)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path, Response

from api import access, audit, relations
from api.access import ChangesAccess, SeesCare
from api.deps import CallerDep, DbDep, NowDep, require_role
from api.problems import responses
from api.schemas import USERNAME_PATTERN, MemberPublic, ProxyCreate, ProxyPublic

router = APIRouter(tags=["access"])

UsernamePath = Annotated[str, Path(pattern=USERNAME_PATTERN, max_length=100)]
ProxyId = Annotated[int, Path(ge=1, le=2**63 - 1)]


@router.get("/teams/{team_id}/members", response_model=list[MemberPublic],
            responses=responses(404, 422))
def members(team_id: UUID, conn: DbDep, caller: CallerDep) -> list[MemberPublic]:
    """The nurses who work in the team, by username."""
    access.team(conn, caller, team_id)
    return [MemberPublic.model_validate(row) for row in relations.members_of(conn, team_id)]


@router.put("/teams/{team_id}/members/{username}", status_code=204, response_class=Response,
            responses=responses(403, 404, 422))
def add_member(team_id: UUID, username: UsernamePath, conn: DbDep, caller: CallerDep,
               now: NowDep) -> Response:
    """The nurse works in the team (again: nothing changes); administrators only. 422 for a
    user who is not a nurse."""
    require_role(caller, "administrator")
    relations.add_member(conn, username, team_id, now)
    audit.record(conn, caller, "change", "team_members", [None], now)
    return Response(status_code=204)


@router.delete("/teams/{team_id}/members/{username}", status_code=204, response_class=Response,
               responses=responses(403, 404, 422))
def remove_member(team_id: UUID, username: UsernamePath, conn: DbDep, caller: CallerDep,
                  now: NowDep) -> Response:
    """The nurse no longer works in the team; administrators only."""
    require_role(caller, "administrator")
    relations.remove_member(conn, username, team_id)
    audit.record(conn, caller, "change", "team_members", [None], now)
    return Response(status_code=204)


@router.get("/citizens/{citizen_id}/proxies", response_model=list[ProxyPublic],
            responses=responses(404, 422))
def proxies(citizen_id: UUID, _access: SeesCare, conn: DbDep) -> list[ProxyPublic]:
    """Every proxy the citizen has given, revoked ones included, oldest first."""
    return [ProxyPublic.model_validate(p) for p in relations.proxies_of(conn, citizen_id)]


@router.post("/citizens/{citizen_id}/proxies", response_model=ProxyPublic, status_code=201,
             responses=responses(400, 403, 404, 422))
def grant_proxy(citizen_id: UUID, _access: ChangesAccess, body: ProxyCreate, conn: DbDep,
                caller: CallerDep, now: NowDep) -> ProxyPublic:
    """The relative may see the citizen's data of `kinds` measured from valid_from (default now)
    until valid_until, while that lasts. 422 for a user who is not a relative."""
    return ProxyPublic.model_validate(relations.grant_proxy(
        conn, citizen_id, body.relative, list(body.kinds), body.valid_from or now,
        body.valid_until, caller.subject, now))


@router.delete("/citizens/{citizen_id}/proxies/{proxy_id}", response_model=ProxyPublic,
               responses=responses(403, 404, 422))
def revoke_proxy(citizen_id: UUID, proxy_id: ProxyId, _access: ChangesAccess, conn: DbDep,
                 now: NowDep) -> ProxyPublic:
    """The proxy no longer holds, from now (revoking again changes nothing)."""
    return ProxyPublic.model_validate(relations.revoke_proxy(conn, citizen_id, proxy_id, now))
