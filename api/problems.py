"""Errors as RFC 9457 problem+json. Domain errors map to statuses in one table, here."""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from core.errors import Conflict, InvalidInput, NotFound, TelecareError

log = logging.getLogger(__name__)

STATUS_BY_ERROR: dict[type[TelecareError], int] = {
    NotFound: 404,
    Conflict: 409,
    InvalidInput: 422,
}
PROBLEM = "application/problem+json"


def problem(status: int, detail: str, *, code: str | None = None,
            extra: dict[str, object] | None = None) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, object] = {
        "type": f"https://telecare.dev/problems/{code or status}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    body.update(extra or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def _status_of(error: TelecareError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into problem+json."""

    @app.exception_handler(TelecareError)
    async def _domain(_r: Request, exc: TelecareError) -> JSONResponse:
        return problem(_status_of(exc), str(exc), code=exc.code)

    @app.exception_handler(RequestValidationError)
    async def _validation(_r: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return problem(422, "the request is not valid", code="invalid_request",
                       extra={"errors": errors})

    @app.exception_handler(HTTPException)
    async def _http(_r: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal error; it has been logged")
