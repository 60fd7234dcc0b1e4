"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import Depends, FastAPI
from psycopg_pool import ConnectionPool

from api import problems
from api.auth.service import TokenPolicy
from api.auth.tokens import signing_key
from api.deps import current_caller
from api.erasure import Retention
from api.routes import (
    alert_stream,
    alerts,
    audit,
    auth,
    baselines,
    care,
    citizen_rights,
    dead_letters,
    device_credentials,
    devices,
    fhir,
    health,
    pilots,
    readings,
    registry,
    relations,
    users,
)
from core.clock import Clock, system_clock
from core.db import open_pool
from core.migrations import load_migrations
from core.settings import Settings
from pilots.pseudonyms import key_of


class TelecareAPI(FastAPI):
    """FastAPI whose OpenAPI document also carries the problem+json schema the routes refer to."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            problems.add_problem_schema(super().openapi())
        return super().openapi()  # built once and kept by FastAPI


def create_app(settings: Settings, *, pool: ConnectionPool | None = None,
               clock: Clock = system_clock) -> FastAPI:
    """The API; opens its own pool from settings unless one is given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = pool is None
        app.state.pool = pool or open_pool(settings.for_process("api").database_dsn())
        app.state.clock = clock
        app.state.migrations_expected = len(load_migrations())  # read once, not per probe
        try:
            yield
        finally:
            if owned:
                app.state.pool.close()

    app = TelecareAPI(title="Telecare API", version="0.1.0", lifespan=lifespan,
                      dependencies=[Depends(current_caller)])
    app.state.auth_required = settings.auth_required
    app.state.token_policy = TokenPolicy(
        key=signing_key(settings), access_ttl=timedelta(seconds=settings.access_token_ttl_s),
        refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_s))
    app.state.pseudonym_key = key_of(settings)  # None: the pilot aggregates answer 503
    app.state.retention = Retention.of(settings)  # the erasure plan's (api/erasure.py)
    problems.install(app)
    app.include_router(health.router)
    for router in (auth.router, readings.router, devices.router, dead_letters.router,
                   alerts.router, care.router, relations.router, audit.router, registry.router,
                   users.router, baselines.router):
        app.include_router(router, prefix="/v1")
    app.include_router(device_credentials.router, prefix="/v1")
    app.include_router(alert_stream.router, prefix="/v1")
    app.include_router(fhir.router, prefix="/v1")
    app.include_router(pilots.router, prefix="/v1")
    app.include_router(citizen_rights.router, prefix="/v1")
    return app
