"""Dependencies shared by the routes: the caller, a database connection, the clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from psycopg_pool import ConnectionPool

from api.auth.errors import NotAllowed, NotSignedIn
from api.auth.service import TokenPolicy
from api.auth.tokens import read_access_token
from core.clock import Clock


@dataclass(frozen=True)
class Caller:
    """Who is asking: a signed-in user (subject = user id), or, while sign-in is not required,
    the local operator. Access scoping attaches here (issue: access control)."""

    subject: str
    role: str
    username: str | None = None
    token_expires_at: datetime | None = None


LOCAL_OPERATOR = Caller(subject="local-operator", role="operator")
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
        return LOCAL_OPERATOR
    policy: TokenPolicy = request.app.state.token_policy
    clock: Clock = request.app.state.clock
    claims = read_access_token(token, policy.key, clock())
    return Caller(subject=str(claims.user_id), role=claims.role, username=claims.username,
                  token_expires_at=claims.expires_at)


def require_role(caller: Caller, *roles: str) -> None:
    """NotAllowed unless the caller has one of `roles` (the local operator has every role)."""
    if caller is not LOCAL_OPERATOR and caller.role not in roles:
        raise NotAllowed(f"a {caller.role} may not do this")


def db(request: Request) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection for one request, in a transaction committed at the end."""
    pool: ConnectionPool = request.app.state.pool
    with pool.connection() as conn:
        yield conn


def now(request: Request) -> datetime:
    clock: Clock = request.app.state.clock
    return clock()


CallerDep = Annotated[Caller, Depends(current_caller)]
DbDep = Annotated[psycopg.Connection[Any], Depends(db)]
NowDep = Annotated[datetime, Depends(now)]
