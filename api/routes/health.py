"""Liveness and readiness for orchestrators."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.problems import problem, responses
from api.schemas import Health, Ready
from devices import repository

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, responses=responses())
def health() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/ready", response_model=Ready, responses=responses(503))
def ready(request: Request) -> Ready | JSONResponse:
    """Ready when the database answers and every migration has been applied."""
    expected: int = request.app.state.migrations_expected
    try:
        with request.app.state.pool.connection(timeout=2) as conn:
            applied = conn.execute("SELECT count(*) AS n FROM schema_migrations").fetchone()["n"]
            backend = repository.storage_backend(conn)
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with the reason
        return problem(503, f"database unavailable: {type(exc).__name__}", code="not_ready")
    if applied < expected:
        return problem(503, f"{expected - applied} migration(s) pending", code="not_ready")
    return Ready(status="ready", storage=backend, migrations=applied)
