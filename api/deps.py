"""Dependencies shared by the routes: the caller, a database connection, the clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import Depends, Request
from psycopg_pool import ConnectionPool

from core.clock import Clock


@dataclass(frozen=True)
class Caller:
    """Who is asking. Authentication and access scoping attach here (issue: access control);
    until then every caller is the local operator."""

    subject: str
    role: str


def current_caller(_request: Request) -> Caller:
    """The one gate every route passes through."""
    return Caller(subject="local-operator", role="operator")


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
