"""Liveness and readiness for orchestrators."""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.deps import NowDep
from api.problems import problem, responses
from api.schemas import Health, MaintenanceJobPublic, Ready
from devices import repository
from devices.maintenance import maintenance_status

# The maintenance loop runs hourly (telecare/maintenance.py): two missed runs are overdue.
MAINTENANCE_DUE = timedelta(hours=2)

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, responses=responses())
def health() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/ready", response_model=Ready, responses=responses(503))
def ready(request: Request, now: NowDep) -> Ready | JSONResponse:
    """Ready when the database answers and every migration has been applied; degraded (still
    200) when a maintenance job is failing or overdue."""
    expected: int = request.app.state.migrations_expected
    try:
        with request.app.state.pool.connection(timeout=2) as conn:
            applied = conn.execute("SELECT count(*) AS n FROM schema_migrations").fetchone()["n"]
            if applied < expected:
                return problem(503, f"{expected - applied} migration(s) pending",
                               code="not_ready")
            backend = repository.storage_backend(conn)
            jobs = [MaintenanceJobPublic(**asdict(job), overdue=job.overdue(now, MAINTENANCE_DUE))
                    for job in maintenance_status(conn)]
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with the reason
        return problem(503, f"database unavailable: {type(exc).__name__}", code="not_ready")
    degraded = any(job.failures or job.overdue for job in jobs)
    return Ready(status="degraded" if degraded else "ready", storage=backend,
                 migrations=applied, maintenance=jobs)

