"""The API on the session's real database, with the clock fixed at NOW."""

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.db import open_pool
from core.settings import Settings

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def client(database: str) -> Iterator[TestClient]:
    pool = open_pool(database, max_size=4)
    app = create_app(Settings(database_url=database), pool=pool, clock=lambda: NOW)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    pool.close()
