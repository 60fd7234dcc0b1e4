"""Errors as RFC 9457 problem+json. Domain errors map to statuses in one table, here, and the
answers every route can give are documented from one table, here too."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException

from alerts.errors import AlertConflict, AlertNotFound, InvalidThresholds
from api.audit import AuditUnavailable
from api.auth.errors import NotAllowed, NotSignedIn, SignInBlocked, SignInBusy, SignInRefused
from api.errors import NotCommitted
from api.schemas import Problem
from core.errors import Conflict, InvalidInput, NotFound, TelecareError

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[TelecareError], int] = {
    NotFound: 404,
    Conflict: 409,
    InvalidInput: 422,
    # Named although their bases map them already: a triage client relies on these three.
    AlertNotFound: 404,
    AlertConflict: 409,
    InvalidThresholds: 422,
    NotSignedIn: 401,
    NotAllowed: 403,
    SignInRefused: 400,  # OAuth2's invalid_grant
    SignInBlocked: 429,
    SignInBusy: 503,
    AuditUnavailable: 503,
    NotCommitted: 503,
}
PROBLEM = "application/problem+json"
PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"

# What each status means on this API, for the OpenAPI document.
_MEANING: dict[int, str] = {
    400: "The body could not be read as JSON; or, signing in, the username and password (or the "
         "refresh token) are not valid: `invalid_grant`, one answer whichever it was.",
    401: "No valid access token: sign in at /v1/auth/token and send it as `Authorization: "
         "Bearer ...` (expired, not ours, or missing where sign-in is required).",
    403: "Your role may not do this (managing a team's webhooks: administrators only).",
    429: "Too many failed sign-ins: try again after Retry-After seconds.",
    404: "No such resource (an unknown citizen, device, care team, alert, plan or pause).",
    409: "The request conflicts with the resource's state: resolving a resolved alert, "
         "acknowledging one that is not open, a plan the citizen already follows in that "
         "period, a care team name already taken.",
    422: "The request is not valid: a parameter is missing, malformed (an id that cannot be one, "
         "a time without a UTC offset, an unknown metric) or out of range, or parameters "
         "contradict each other (start not before end, too many buckets, threshold bands out of "
         "order, escalation steps not increasing). `errors` lists the parameters at fault when "
         "the form of one is wrong.",
    500: "An unexpected error; it has been logged. Nothing a client sends should cause it.",
    503: "The database is unavailable (try again after Retry-After seconds), or, for /ready, "
         "migrations are pending; at sign-in, too many sign-ins at once (`sign_in_busy`); "
         "or the audit record of a look could not be written (`audit_unavailable`) or the request "
         "could not commit (`not_committed`), so nothing is shown.",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route: each status as problem+json, plus those any route may give
    (401 for a token that is not valid, 500, 503)."""
    return {status: {"description": _MEANING[status],
                     "content": {PROBLEM: {"schema": {"$ref": PROBLEM_SCHEMA_REF}}}}
            for status in sorted({*statuses, 401, 500, 503})}


def add_problem_schema(document: dict[str, Any]) -> None:
    """Put the Problem schema into the document's components: the routes refer to it by $ref,
    and FastAPI registers only the models routes return as JSON."""
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components = document.setdefault("components", {}).setdefault("schemas", {})
    components.update(schema.pop("$defs", {}))
    components["Problem"] = schema


def problem(status: int, detail: str, *, code: str | None = None,
            extra: dict[str, object] | None = None,
            headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, object] = {
        "type": f"https://telecare.dev/problems/{code or status}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _status_of(error: TelecareError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


def _errors(exc: RequestValidationError) -> list[dict[str, object]]:
    # Only where and what: pydantic's `input` would echo what the client sent back.
    return [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]


_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


def _allowed(request: Request) -> str | None:
    """The methods the document lists for the request's path; None for a path it does not list."""
    path = request.scope["path"]
    for template, item in request.app.openapi()["paths"].items():
        parts = re.split(r"(\{[^/{}]+\})", template)
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
        if re.fullmatch(pattern, path):
            return ", ".join(sorted(method.upper() for method in item if method in _METHODS))
    return None


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json."""

    @app.exception_handler(TelecareError)
    async def _domain(_r: Request, exc: TelecareError) -> JSONResponse:
        return problem(_status_of(exc), str(exc), code=exc.code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_r: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, "the request is not valid", code="invalid_request",
                       extra={"errors": _errors(exc)})

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's 405 names the allowed methods in its headers (RFC 9110 requires Allow),
        # but only those of the first route on the path: a path served by several routes
        # (GET and POST /v1/teams) allows the methods of all of them.
        headers = exc.headers
        allowed = _allowed(request) if exc.status_code == 405 else None
        if allowed:
            headers = {**(headers or {}), "Allow": allowed}
        return problem(exc.status_code, str(exc.detail), headers=headers)

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The database is down or saturated: say so, and when to try again, rather than 500.
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                    type(exc).__name__)
        return problem(503, "the database is unavailable; try again shortly",
                       code="unavailable", headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal error; it has been logged")
