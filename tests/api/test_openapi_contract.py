"""The OpenAPI document tells the truth. Schemathesis 4 generates requests from the document the
app serves (its coverage and fuzzing phases: valid and invalid data, boundary values, methods the
document does not list) and runs every check it has on every answer of the real app on the real
database: no 500, every status and media type documented, bodies as their schemas say, requests
the document allows accepted and requests it forbids refused, 405 with Allow.

The same runs again signed in as each role (fewer examples each): a role's refusals (403, and
404 for what its relation does not reach) must be documented and well-formed too.

Deterministic: a fixed seed, derandomized, no example database."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from schemathesis.core.parameters import ParameterLocation

from alerts import service as alerts_service
from alerts.errors import InvalidPlan
from alerts.models import Finding, Severity
from alerts.plans import validate_settings
from alerts.service import points_inside
from api import relations
from api.access import KINDS
from api.app import create_app
from api.auth import repository as auth_repo
from api.auth import service as auth_service
from api.auth.tokens import issue_access_token
from api.routes.care import WHAT_IF_DEFAULT, WHAT_IF_LONGEST
from api.routes.readings import DEFAULT_RANGE, MAX_BUCKETS
from core.db import open_pool
from core.roles import process_dsn
from core.settings import Settings
from devices import service
from devices.models import Device
from devices.repository import prepare_reading_stage
from ingest.decode import Inbound
from ingest.pipeline import Limits, process_batch
from tests.conftest import PAIRED_SINCE, only_on, reading_message

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
EXAMPLES_PER_OPERATION = 200
CONFIG = schemathesis.Config.from_dict({
    "seed": 20261120,
    "generation": {"max-examples": EXAMPLES_PER_OPERATION, "deterministic": True,
                   "database": "none"},
    # Every check, and max_response_time (off unless given a limit) as a hang detector.
    "checks": {"enabled": True, "max_response_time": 10.0},
})
READINGS = "/v1/citizens/{citizen_id}/readings"
THRESHOLD = "/v1/citizens/{citizen_id}/thresholds/{metric}"
WHAT_IF = f"{THRESHOLD}/what-if"
PAUSES = "/v1/citizens/{citizen_id}/pauses"
PROXIES = "/v1/citizens/{citizen_id}/proxies"
PLAN = "/v1/citizens/{citizen_id}/plans/{plan}"
POLICY = "/v1/teams/{team_id}/escalation-policy"
SIGN_IN = ("/v1/auth/token", "/v1/auth/refresh")
WEBHOOKS = "/v1/teams/{team_id}/webhooks"
ROLE_CONFIG = schemathesis.Config.from_dict({
    "seed": 20261120,
    "generation": {"max-examples": 15, "deterministic": True, "database": "none"},
    "checks": {"enabled": True, "max_response_time": 10.0},
})
ROLES = ("administrator", "nurse", "citizen", "relative", "project_lead", "service")
KEY = "c" * 40
BANDS = ("alert_low", "warning_low", "warning_high", "alert_high")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class LateBoundApp:
    """The ASGI entry point schemathesis calls, with the application behind it set later.

    Schemathesis binds its app when this module is imported, but the app needs the session's
    database, which exists only once the `database` fixture has run; its fixture-based loader
    (`schemathesis.pytest.from_fixture`) cannot be used, as 4.32 sets `Function._nodeid`, which
    pytest 9.2 no longer has. The real app's lifespan is run by the fixture."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await self.app(scope, receive, send)


# Serves the document at import time; it is built by the same code as the app under test.
DOCUMENT_ONLY = create_app(Settings())
ENTRY = LateBoundApp(DOCUMENT_ONLY)
schema = schemathesis.openapi.from_asgi("/openapi.json", ENTRY, config=CONFIG)
role_schema = schemathesis.openapi.from_asgi("/openapi.json", ENTRY, config=ROLE_CONFIG)


@dataclass(frozen=True)
class Seeded:
    citizen_id: UUID
    device_id: str
    team_id: UUID
    alert_id: int
    users: dict[str, str]  # a username per role, each user related to the seeded citizen
    database: str

    def token(self, role: str) -> str:
        """An access token of the role's user as it is now: an administrator's call of this run
        may have disabled and enabled it, or set its password, which ends the tokens issued
        before (a client signs in again)."""
        with psycopg.connect(self.database) as conn:
            user = auth_repo.user_by_username(conn, self.users[role])
        assert user is not None
        return issue_access_token(user, KEY, NOW, timedelta(hours=1))


@pytest.fixture(scope="module")
def api(database: str) -> Iterator[Seeded]:
    """The app on the session's database, holding a citizen with readings, a device, a dead letter."""
    seeded = _seed(database)
    pool = open_pool(process_dsn(database, "api"), max_size=4)
    app = create_app(Settings(database_url=database, auth_signing_key=SecretStr(KEY),
                              auth_required=False), pool=pool,
                     clock=lambda: NOW)
    assert app.openapi() == DOCUMENT_ONLY.openapi()
    with TestClient(app):  # runs the lifespan
        ENTRY.app = app
        yield seeded
    ENTRY.app = DOCUMENT_ONLY
    pool.close()


def _seed(database: str) -> Seeded:
    with psycopg.connect(database, autocommit=True) as conn:
        citizen = service.enrol_citizen(conn, "Contract Citizen", ["copd"])
        device = "contract-bp-1"
        service.register_device(conn, Device(id=device, kind="bp_monitor",  # type: ignore[arg-type]
                                             model="M", serial="S-contract-bp-1"))
        service.pair_device(conn, device, citizen, PAIRED_SINCE)
        message = reading_message(device, range(48), start=NOW - timedelta(days=1),
                                  step=timedelta(minutes=30))
        limits = Limits("telecare", 65536, timedelta(minutes=10), timedelta(minutes=5))
        prepare_reading_stage(conn)
        with conn.transaction():
            process_batch(conn, [Inbound(f"telecare/v1/{device}/readings", message.encode(), NOW),
                                 Inbound("telecare/v1/contract-x/readings", b"{nope", NOW)],
                          limits)
        team = alerts_service.create_team(conn, "Contract Team", NOW)
        alerts_service.assign_citizen(conn, citizen, team.id)
        alerts_service.record_findings(conn, citizen, team.id, [Finding(
            rule="threshold:systolic_bp", severity=Severity.RED, occurrence="contract",
            measured_at=NOW - timedelta(hours=1), summary="systolic high",
            explanation={"metric": "systolic_bp", "value": 190})], NOW)
        row = conn.execute("SELECT id FROM alerts WHERE citizen_id = %s", (citizen,)).fetchone()
        assert row is not None
        users = _users(conn, citizen, team.id)
    return Seeded(citizen, device, team.id, int(row[0]), users, database)


def _users(conn: psycopg.Connection[Any], citizen: UUID, team: UUID) -> dict[str, str]:
    """The username of a user of each role, each related to the seeded citizen as the role can
    be: the nurse works in the team, the citizen user is the citizen, the relative has a proxy
    for all."""
    users = {}
    for role in ROLES:
        username = f"contract-{role.replace('_', '-')}"
        auth_service.create_user(conn, username, "Contract", role, "contract password", NOW)
        users[role] = username
    relations.add_member(conn, "contract-nurse", team, NOW)
    relations.link_citizen(conn, "contract-citizen", citizen)
    relations.grant_proxy(conn, citizen, "contract-relative", list(KINDS),
                          NOW - timedelta(days=30), None, "contract", NOW)
    return users


# A stream never ends, and schemathesis waits for the whole body: the alert stream's answers
# are checked by tests/api/test_alert_stream.py (events, 404, 422) instead.
@schema.exclude(path_regex=r"/stream$").parametrize()
def test_every_answer_is_documented_and_true(case: schemathesis.Case, api: Seeded) -> None:
    _check(case, api)


@only_on("postgres")  # the roles' answers do not depend on the storage backend
@pytest.mark.parametrize("role", ROLES)
@role_schema.exclude(path_regex=r"/stream$").parametrize()
def test_every_answer_to_each_role_is_documented_and_true(case: schemathesis.Case, api: Seeded,
                                                          role: str) -> None:
    _check(case, api, {"Authorization": f"Bearer {api.token(role)}"})


def _check(case: schemathesis.Case, api: Seeded, headers: dict[str, str] | None = None) -> None:
    _aim_at_seeded(case, api)
    response = case.call(headers=headers)
    positive = case.meta is not None and not case.meta.generation.mode.is_negative
    if positive and case.operation.path in SIGN_IN and response.status_code == 400:
        # Made-up credentials are well-formed and wrong: refused as OAuth2 says (invalid_grant).
        assert response.json()["type"].endswith("/invalid_grant"), response.text
        case.validate_response(response,
                               excluded_checks=[schemathesis.checks.positive_data_acceptance])
        return
    if positive and response.status_code == 422 and _names_user_of_another_role(response):
        # A username that another operation of this run created (POST /v1/users) with a role
        # this one does not take: refused by what is stored, which no schema can say.
        case.validate_response(response,
                               excluded_checks=[schemathesis.checks.positive_data_acceptance])
        return
    refusal = _contradiction(case, api)
    if refusal is None:
        case.validate_response(response)
        return
    if headers is not None and response.status_code in (403, 404):
        # The relation is checked before the body is read: a role that may not change the
        # seeded citizen (or see it) is refused whatever the body says.
        case.validate_response(response,
                               excluded_checks=[schemathesis.checks.positive_data_acceptance])
        return
    # Well-formed parameters that contradict each other: refused, which no parameter schema
    # can say; every other check still applies.
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith(f"/{refusal}")
    case.validate_response(response, excluded_checks=[schemathesis.checks.positive_data_acceptance])


ENDS_THE_SEEDED = ("/discharge", "/holder")


def _names_user_of_another_role(response: Any) -> bool:
    body = response.json()
    return body["type"].endswith("/invalid_user") and " is a " in body["detail"]


def _aim_at_seeded(case: schemathesis.Case, seeded: Seeded) -> None:
    """Point half of the well-formed ids at the seeded citizen and device, so that answers with
    data are checked as well as 404s. Invalid ids are left as generated."""
    if case.meta is None or case.meta.is_negative_at(ParameterLocation.PATH):
        return
    if case.operation.path.endswith(ENDS_THE_SEEDED):
        return  # a discharge or a device taken back would leave the rest less to look at
    known: dict[str, str | int] = {
        "citizen_id": str(seeded.citizen_id), "device_id": seeded.device_id,
        "team_id": str(seeded.team_id), "alert_id": seeded.alert_id}
    for name, value in list(case.path_parameters.items()):
        if name in known and zlib.crc32(str(value).encode()) % 2 == 0:
            case.path_parameters[name] = known[name]


def _contradiction(case: schemathesis.Case, seeded: Seeded) -> str | None:
    """The refusal a request must get when its well-formed parameters contradict each other,
    worked out apart from the API's own parsers; None for any other request (or one this
    cannot read: then every check judges the answer)."""
    if case.meta is None or case.meta.generation.mode.is_negative:
        return None
    if case.operation.path == READINGS:
        return _readings_contradiction(case)
    # Contradictions in a body are found only once the path names something that exists.
    params = case.path_parameters or {}
    body = case.body if isinstance(case.body, dict) else None
    if body is None or case.operation.method.upper() not in ("PUT", "POST"):
        return None
    if case.operation.path == WEBHOOKS and points_inside(str(body.get("url", ""))):
        return "invalid_webhook"  # this machine or link-local: no pattern can say so
    if case.operation.path == "/v1/pilots" and body.get("ends_at") is not None:
        try:
            start = _time(body["starts_at"]) if body.get("starts_at") is not None else NOW
            if _time(body["ends_at"]) <= start:
                return "invalid_pilot"
        except (ValueError, OverflowError):
            return None
    if params.get("citizen_id") == str(seeded.citizen_id):
        return _citizen_contradiction(case.operation.path, params, body)
    if case.operation.path == POLICY and params.get("team_id") == str(seeded.team_id):
        times = [step["after_s"] for step in body.get("steps", [])]
        webhook = any(step["contact"]["kind"] == "webhook" for step in body.get("steps", []))
        if webhook or any(b <= a for a, b in zip(times, times[1:], strict=False)):
            return "invalid_escalation_policy"  # the seeded team has no webhooks
    return None


def _citizen_contradiction(path: str, params: dict[str, Any], body: dict[str, Any]) -> str | None:
    try:
        if path in (THRESHOLD, WHAT_IF):
            given = [body[name] for name in BANDS if body.get(name) is not None]
            if not given or any(b <= a for a, b in zip(given, given[1:], strict=False)):
                return "invalid_thresholds"
        if path == WHAT_IF:
            end = _time(body["end"]) if body.get("end") is not None else NOW
            start = _time(body["start"]) if body.get("start") is not None else end - WHAT_IF_DEFAULT
            if start >= end:
                return "empty_range"
            if end - start > WHAT_IF_LONGEST:
                return "period_too_long"
        if path == PAUSES and body.get("end") is not None:
            start = _time(body["start"]) if body.get("start") is not None else NOW
            if _time(body["end"]) <= start:
                return "invalid_pause"
        if path == PROXIES and body.get("valid_until") is not None:
            start = _time(body["valid_from"]) if body.get("valid_from") is not None else NOW
            if _time(body["valid_until"]) <= start:
                return "invalid_proxy"
    except (ValueError, OverflowError):
        return None
    if path == PLAN and body.get("settings"):
        try:
            validate_settings(str(params["plan"]), body["settings"])
        except InvalidPlan:
            return "invalid_plan"
    return None


def _readings_contradiction(case: schemathesis.Case) -> str | None:
    query = case.query or {}
    try:
        end = _time(query["end"]) if "end" in query else NOW
        start = _time(query["start"]) if "start" in query else end - DEFAULT_RANGE
        width = _width(query["bucket"]) if "bucket" in query else None
    except (ValueError, OverflowError):
        return None
    if start >= end:
        return "empty_range"
    if width is not None and (end - start) / width > MAX_BUCKETS:
        return "too_many_buckets"
    return None


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.upper())


def _width(text: str) -> timedelta:
    return timedelta(seconds=int(text[:-1]) * _UNIT_SECONDS[text[-1]])
