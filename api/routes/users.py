"""Users over the API, for administrators: list, add, disable and enable, unlock after failed
sign-ins, set a password, link a citizen user to the citizen (`telecare users …` does the same
from a shell; docs/access.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api import audit, relations
from api.auth import repository as auth_repo
from api.auth import service
from api.auth.errors import UserNotFound
from api.auth.models import User
from api.deps import CallerDep, DbDep, NowDep, require_role
from api.problems import responses
from api.schemas import USERNAME_PATTERN, PasswordSet, UserCitizenLink, UserCreate, UserPublic

router = APIRouter(tags=["users"])
UsernamePath = Annotated[str, Path(pattern=USERNAME_PATTERN, max_length=100)]


@router.get("/users", response_model=list[UserPublic], responses=responses(403))
def list_users(conn: DbDep, caller: CallerDep, now: NowDep) -> list[UserPublic]:
    """Every user with their state. Administrators only."""
    require_role(caller, "administrator")
    blocked = service.blocked_usernames(conn, now)
    return [_public(user, blocked) for user in service.users(conn)]


@router.post("/users", response_model=UserPublic, status_code=201,
             responses=responses(400, 403, 409, 422))
def add_user(body: UserCreate, conn: DbDep, caller: CallerDep, now: NowDep) -> UserPublic:
    """A new user (409 for a username taken). Administrators only."""
    require_role(caller, "administrator")
    user = service.create_user(conn, body.username, body.display_name, body.role, body.password,
                               now)
    return _public(user, set())


@router.post("/users/{username}/disable", response_model=UserPublic,
             responses=responses(403, 404, 422))
def disable_user(username: UsernamePath, conn: DbDep, caller: CallerDep,
                 now: NowDep) -> UserPublic:
    """No more sign-ins; the user's refresh tokens are revoked and an access token still about
    stops working at once. Administrators only."""
    require_role(caller, "administrator")
    service.disable_user(conn, username, now)
    return _user(conn, username, now)


@router.post("/users/{username}/enable", response_model=UserPublic,
             responses=responses(403, 404, 422))
def enable_user(username: UsernamePath, conn: DbDep, caller: CallerDep, now: NowDep) -> UserPublic:
    require_role(caller, "administrator")
    service.enable_user(conn, username)
    return _user(conn, username, now)


@router.post("/users/{username}/unlock", response_model=UserPublic,
             responses=responses(403, 404, 422))
def unlock_user(username: UsernamePath, conn: DbDep, caller: CallerDep, now: NowDep) -> UserPublic:
    """Forget the user's failed sign-ins. Administrators only."""
    require_role(caller, "administrator")
    user = _user(conn, username, now)
    service.unlock(conn, username)
    return user.model_copy(update={"blocked": False})


@router.put("/users/{username}/password", response_model=UserPublic,
            responses=responses(400, 403, 404, 422))
def set_password(username: UsernamePath, body: PasswordSet, conn: DbDep, caller: CallerDep,
                 now: NowDep) -> UserPublic:
    """A new password; every sign-in with the old one is revoked. Administrators only."""
    require_role(caller, "administrator")
    service.set_password(conn, username, body.password, now)
    return _user(conn, username, now)


@router.put("/users/{username}/citizen", response_model=UserPublic,
            responses=responses(400, 403, 404, 409, 422))
def link_citizen(username: UsernamePath, body: UserCitizenLink, conn: DbDep, caller: CallerDep,
                 now: NowDep) -> UserPublic:
    """The citizen user is this citizen and sees their own data (409 when the citizen has a
    user already). Administrators only; recorded as a change of the citizen's access."""
    require_role(caller, "administrator")
    relations.link_citizen(conn, username, body.citizen_id)
    audit.record(conn, caller, "change", "access", [body.citizen_id], now)
    return _user(conn, username, now)


def _user(conn: DbDep, username: str, now: NowDep) -> UserPublic:
    user = auth_repo.user_by_username(conn, username)
    if user is None:
        raise UserNotFound(f"no user {username!r}")
    return _public(user, service.blocked_usernames(conn, now))


def _public(user: User, blocked: set[str]) -> UserPublic:
    return UserPublic(id=user.id, username=user.username, display_name=user.display_name,
                      role=user.role, created_at=user.created_at, disabled_at=user.disabled_at,
                      blocked=user.username in blocked)

