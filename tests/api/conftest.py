"""The API on the session's real database, with the clock fixed at NOW."""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from api.app import create_app
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
