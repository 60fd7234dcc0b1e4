"""Sign-in with the OAuth2 password flow, refresh, sign-out, and who the token says you are."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from psycopg_pool import ConnectionPool

from api.auth import service
from api.auth.errors import NotSignedIn
from api.auth.service import TokenPolicy
from api.deps import CallerDep, DbDep, NowDep
from api.problems import responses
from api.schemas import RefreshRequest, SignedIn, TokenResponse

router = APIRouter(tags=["sign-in"])


def _policy(request: Request) -> TokenPolicy:
    policy: TokenPolicy = request.app.state.token_policy
    return policy


PolicyDep = Annotated[TokenPolicy, Depends(_policy)]


@router.post("/auth/token", response_model=TokenResponse,
             responses=responses(400, 422, 429, 503))
def sign_in(form: Annotated[OAuth2PasswordRequestForm, Depends()], request: Request,
            now: NowDep, policy: PolicyDep) -> TokenResponse:
    """Sign in with username and password (form fields, `grant_type=password`): a short-lived
    access token and a refresh token. 400 `invalid_grant` for any wrong detail; 429 with
    Retry-After after repeated failures; 503 `sign_in_busy` in a flood of sign-ins."""
    # No connection for the whole request: none is held while the password is checked.
    pool: ConnectionPool = request.app.state.pool
    pair = service.sign_in(pool.connection, form.username, form.password, now, policy)
    return TokenResponse(access_token=pair.access_token, expires_in=pair.expires_in,
                         refresh_token=pair.refresh_token)


@router.post("/auth/refresh", response_model=TokenResponse, responses=responses(400, 422))
def refresh(body: RefreshRequest, conn: DbDep, now: NowDep, policy: PolicyDep) -> TokenResponse:
    """A new pair for a refresh token, which is spent (a spent one sent again ends its whole
    sign-in); 400 `invalid_grant` when it is not valid."""
    pair = service.refresh(conn, body.refresh_token, now, policy)
    return TokenResponse(access_token=pair.access_token, expires_in=pair.expires_in,
                         refresh_token=pair.refresh_token)


@router.post("/auth/revoke", status_code=204, response_class=Response,
             responses=responses(400, 422))
def sign_out(body: RefreshRequest, conn: DbDep, now: NowDep) -> Response:
    """Sign out: the refresh token's sign-in can no longer be refreshed (204 also for an unknown
    token, RFC 7009)."""
    service.sign_out(conn, body.refresh_token, now)
    return Response(status_code=204)


@router.get("/auth/me", response_model=SignedIn, responses=responses())
def me(caller: CallerDep) -> SignedIn:
    """Who the access token says you are; 401 without one."""
    if caller.username is None or caller.token_expires_at is None:
        raise NotSignedIn("no access token was sent")
    return SignedIn(id=UUID(caller.subject), username=caller.username, role=caller.role,
                    expires_at=caller.token_expires_at)
