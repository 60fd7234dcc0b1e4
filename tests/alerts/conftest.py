"""Fixtures for alert tests on the real database: a care team, a citizen in it, and findings
built with defaults (tests name only what they are about)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from alerts import service
from alerts.models import Finding, Severity
from devices import service as devices

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class TeamCitizen:
    citizen_id: uuid.UUID
    team_id: uuid.UUID


def new_team(conn: psycopg.Connection[Any]) -> uuid.UUID:
    """A care team with a unique name."""
    return service.create_team(conn, f"Team {uuid.uuid4().hex[:8]}", NOW).id


def new_citizen_in(conn: psycopg.Connection[Any], team_id: uuid.UUID | None,
                   conditions: tuple[str, ...] = ("hypertension",)) -> uuid.UUID:
    """A citizen enrolled and put in the team (None: in none)."""
    citizen_id = devices.enrol_citizen(conn, "Test Citizen", conditions)
    if team_id is not None:
        service.assign_citizen(conn, citizen_id, team_id)
    return citizen_id


@pytest.fixture
def team_id(conn: psycopg.Connection[Any]) -> uuid.UUID:
    """A new care team."""
    return new_team(conn)


@pytest.fixture
def team_citizen(conn: psycopg.Connection[Any], team_id: uuid.UUID) -> TeamCitizen:
    """A new citizen in a new care team."""
    return TeamCitizen(citizen_id=new_citizen_in(conn, team_id), team_id=team_id)


def finding(rule: str = "threshold:systolic_bp", severity: Severity = Severity.RED,
            occurrence: str | None = None, measured_at: datetime = NOW, **fields: Any) -> Finding:
    """A finding with plain defaults: current, not held, about a new reading."""
    if occurrence is None:
        occurrence = f"r:bp-1:systolic_bp:{measured_at.isoformat()}:{uuid.uuid4().int % 10**9}"
    fields.setdefault("summary", f"{rule} {severity.value}")
    return Finding(rule=rule, severity=severity, occurrence=occurrence, measured_at=measured_at,
                   **fields)


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


@pytest.fixture
def db(fresh_database: str) -> str:
    """A database of the test's own: an engine drains every queued item of its database."""
    return fresh_database


@pytest.fixture
def dbconn(db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db, autocommit=True) as connection:
        yield connection
