"""Dependencies shared by the routes: the caller, a database connection, the clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

import psycopg
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from psycopg_pool import ConnectionPool

from api.auth import repository as auth_repo
from api.auth.errors import InvalidPurpose, NotAllowed, NotSignedIn
from api.auth.service import TokenPolicy
from api.auth.tokens import read_access_token
from api.errors import NotCommitted
from core.clock import Clock
from core.db import describe_error


@dataclass(frozen=True)
class Caller:
    """Who is asking, in which request and why: a signed-in user (subject = user id), or, while
    sign-in is not required, the local operator. Access scoping (api/access.py) and the audit
    record (api/audit.py) read it."""

    subject: str
    role: str
    username: str | None = None
    token_expires_at: datetime | None = None
    token_generation: int | None = None
    # One per request: a request looks at a citizen once in the audit log.
    request_id: UUID = field(default_factory=uuid4)
    route: str = ""
    purpose: str = ""

    @property
    def is_local_operator(self) -> bool:
        return self.subject == LOCAL_SUBJECT and self.role == OPERATOR_ROLE


LOCAL_SUBJECT, OPERATOR_ROLE = "local-operator", "operator"
LOCAL_OPERATOR = Caller(subject=LOCAL_SUBJECT, role=OPERATOR_ROLE)
# Why a caller looks (the audit record's purpose): sent in this header, or the role's default.
PURPOSE_HEADER = "Telecare-Purpose"
PURPOSES = frozenset({"care", "self", "proxy", "administration", "citizen_request", "quality"})
DEFAULT_PURPOSE = {"nurse": "care", "citizen": "self", "relative": "proxy",
                   "administrator": "administration", OPERATOR_ROLE: "administration",
                   "project_lead": "quality", "service": "care"}
# Reachable without a token even when sign-in is required.
OPEN_PATHS = frozenset({"/health", "/ready", "/v1/auth/token", "/v1/auth/refresh",
                        "/v1/auth/revoke"})
# Lets /docs authorise with the password flow; we answer a missing token ourselves.
_bearer = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False)


def current_caller(request: Request,
                   token: Annotated[str | None, Depends(_bearer)] = None) -> Caller:
    """The one gate every route passes through: a token, when sent, must be valid (401
    otherwise); without one, the local operator unless sign-in is required. The open paths
    ignore a token: a client that sends its expired one must still be able to refresh."""
    if request.url.path in OPEN_PATHS:
        return LOCAL_OPERATOR
    if token is None:
        if request.app.state.auth_required:
            raise NotSignedIn("sign in first: this API needs an access token")
        return _in_request(LOCAL_OPERATOR, request)
    policy: TokenPolicy = request.app.state.token_policy
    clock: Clock = request.app.state.clock
    claims = read_access_token(token, policy.key, clock())
    role = current_role(request.app.state.pool, claims.user_id, claims.generation)
    return _in_request(Caller(subject=str(claims.user_id), role=role, username=claims.username,
                              token_expires_at=claims.expires_at,
                              token_generation=claims.generation), request)


def current_role(pool: ConnectionPool, user_id: UUID, generation: int) -> str:
    """The user's role now: a user disabled (or removed) since the token was issued, or whose
    password was changed or who was disabled since (the token's generation is older), is signed
    out at once; one whose role changed acts in the new role, whatever the token says."""
    with pool.connection() as conn:
        user = auth_repo.user_by_id(conn, user_id)
    if user is None or user.disabled_at is not None:
        raise NotSignedIn("this user may no longer sign in; the token is not valid")
    if user.token_generation != generation:
        raise NotSignedIn("this token was ended by a new password or a disabling; sign in again")
    return user.role


def _in_request(caller: Caller, request: Request) -> Caller:
    """The caller with this request's id, route and purpose."""
    purpose = request.headers.get(PURPOSE_HEADER, DEFAULT_PURPOSE.get(caller.role, "care"))
    if purpose not in PURPOSES:
        raise InvalidPurpose(f"{PURPOSE_HEADER} must be one of {', '.join(sorted(PURPOSES))}")
    # The path as called (it names the alert or device looked at), without the query.
    return replace(caller, request_id=uuid4(), route=f"{request.method} {request.url.path}",
                   purpose=purpose)


def require_role(caller: Caller, *roles: str) -> None:
    """NotAllowed unless the caller has one of `roles` (the local operator has every role)."""
    if not caller.is_local_operator and caller.role not in roles:
        raise NotAllowed(f"a {caller.role} may not do this")


def db(request: Request) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection for one request, in a transaction committed at the end, before the
    answer is sent (scope "function" below): a commit that fails (the audit record of a read
    among what it commits) fails the request instead of following an answer already given."""
    pool: ConnectionPool = request.app.state.pool
    with pool.connection() as conn:
        yield conn
        try:
            conn.commit()
        except psycopg.OperationalError:
            raise  # the database went away: 503 with Retry-After (api/problems.py)
        except psycopg.Error as exc:
            raise NotCommitted(f"the request could not be committed ({describe_error(exc)}); "
                               "nothing of it is shown or kept") from None


def now(request: Request) -> datetime:
    clock: Clock = request.app.state.clock
    return clock()


CallerDep = Annotated[Caller, Depends(current_caller)]
DbDep = Annotated[psycopg.Connection[Any], Depends(db, scope="function")]
NowDep = Annotated[datetime, Depends(now)]
