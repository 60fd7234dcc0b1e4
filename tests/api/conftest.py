"""The API on the session's real database, with the clock fixed at NOW."""

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
from api.auth.models import User
from core.db import open_pool
from core.roles import process_dsn
from core.settings import Settings

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
KEY = "a" * 40  # the signing key of the test tokens (tests/api/test_access.py as_user)


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    pool = open_pool(process_dsn(database, "api"), max_size=4)
    app = create_app(Settings(database_url=database, auth_required=False), pool=pool, clock=lambda: NOW)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    pool.close()


@pytest.fixture
def signed_in_client(database: str) -> Iterator[TestClient]:
    """The API with sign-in required, under the API's database role, the clock at NOW: the
    callers are the tokens a test issues (as_user)."""
    pool = open_pool(process_dsn(database, "api"), max_size=4)
    app = create_app(Settings(database_url=database, auth_signing_key=SecretStr(KEY),
                              auth_required=True), pool=pool, clock=lambda: NOW)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    pool.close()


def problem(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The body of a problem+json answer, checked to have `status` (and the error `code`)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["detail"]
    if code is not None:
        assert body["type"].endswith(f"/{code}"), body
    return body


def insert_user(conn: Any, role: str, at: datetime) -> User:
    """A user of `role` created at `at`, with no usable password (tests issue its tokens)."""
    username = f"{role[:5]}-{uuid.uuid4().hex[:10]}"
    row = conn.execute(
        "INSERT INTO users (username, display_name, role, password_hash, created_at)"
        " VALUES (%s, 'Test', %s, 'not-a-hash', %s) RETURNING id",
        (username, role, at)).fetchone()
    assert row is not None
    return User(id=row[0], username=username, display_name="Test", role=role,  # type: ignore[arg-type]
                created_at=at, disabled_at=None)
