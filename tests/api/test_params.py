"""What a client may send: each fault found from outside, and the parsers against the patterns
the OpenAPI document publishes for them."""

import re
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from api.app import create_app
from api.params import (
    BUCKET_PATTERN,
    DEVICE_ID_PATTERN,
    TIME_PATTERN,
    parse_bucket,
    parse_device_id,
    parse_time,
)
from core.db import open_pool
from core.roles import process_dsn
from core.settings import Settings
from devices.catalogue import METRICS
from tests.api.conftest import problem

# The document's patterns as a JSON Schema validator applies them: a search, anchored by ^ and $.
# Python's $ also matches before a final newline, so \Z stands in for it here.
ECMA = {name: re.compile(pattern[:-1] + r"\Z")
        for name, pattern in [("time", TIME_PATTERN), ("device", DEVICE_ID_PATTERN),
                              ("bucket", BUCKET_PATTERN)]}


@pytest.fixture
def citizen(make_device: Any) -> UUID:
    _device, citizen_id = make_device("scale")
    return citizen_id


@pytest.mark.parametrize("params", [
    {"end": "0001-01-02T00:00:00Z"},  # was a 500: start = end - 7 days underflowed
    {"start": "0001-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
    {"end": "1969-12-31T23:59:59Z"},
    {"start": "10000-01-01T00:00:00Z"},
])
def test_times_outside_the_years_the_api_knows_are_422(client: TestClient, citizen: UUID,
                                                       params: dict[str, str]) -> None:
    response = client.get(f"/v1/citizens/{citizen}/readings",
                          params={"metric": "body_weight", **params})
    body = problem(response, 422)
    assert body["errors"][0]["loc"][0] == "query"


@pytest.mark.parametrize("start", ["-1", "1700000000", "2026-11-20", "2026-11-20T00:00:00",
                                   "2026-11-20 00:00:00Z", "２026-11-20T00:00:00Z",
                                   "2026-11-20T00:00:00+0100", "2026-02-30T00:00:00Z"])
def test_a_time_is_rfc_3339_text_with_an_offset(client: TestClient, citizen: UUID,
                                                start: str) -> None:
    response = client.get(f"/v1/citizens/{citizen}/readings",
                          params={"metric": "body_weight", "start": start,
                                  "end": "2026-11-21T00:00:00Z"})
    assert problem(response, 422)["errors"][0]["loc"] == ["query", "start"]


def test_the_earliest_end_still_has_a_default_start(client: TestClient, citizen: UUID) -> None:
    response = client.get(f"/v1/citizens/{citizen}/readings",
                          params={"metric": "body_weight", "end": "1970-01-01T00:00:00+14:00"})
    assert response.status_code == 200, response.text
    assert response.json()["start"] == "1969-12-25T00:00:00+14:00"


@pytest.mark.parametrize("path", ["a%00b", "a%0A", "a%20b", "%C3%A6", "a" * 65, "a.b"])
def test_text_that_cannot_be_a_device_id_is_422_before_the_database(client: TestClient,
                                                                    path: str) -> None:
    assert problem(client.get(f"/v1/devices/{path}"), 422)["errors"][0]["loc"] == [
        "path", "device_id"]


def test_an_unknown_well_formed_device_is_404(client: TestClient) -> None:
    problem(client.get("/v1/devices/" + "a" * 64), 404)


@pytest.mark.parametrize("bucket", ["１h", "١h", "0h", "01h", "10000s", "1w", "1H", " 1h", "1h\n"])
def test_a_bucket_is_ascii_digits_and_a_unit(client: TestClient, citizen: UUID,
                                             bucket: str) -> None:
    response = client.get(f"/v1/citizens/{citizen}/readings",
                          params={"metric": "body_weight", "bucket": bucket})
    assert problem(response, 422)["errors"][0]["loc"] == ["query", "bucket"]


@pytest.mark.parametrize(("params", "code"), [
    ({"start": "2026-11-20T00:00:00Z", "end": "2026-11-20T00:00:00Z"}, "empty_range"),
    ({"start": "2026-11-20T01:00:00+01:00", "end": "2026-11-20T00:00:00Z"}, "empty_range"),
    ({"start": "2020-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z", "bucket": "1h"},
     "too_many_buckets"),
])
def test_parameters_that_contradict_each_other_are_422(client: TestClient, citizen: UUID,
                                                       params: dict[str, str], code: str) -> None:
    response = client.get(f"/v1/citizens/{citizen}/readings", params={"metric": "spo2", **params})
    assert problem(response, 422)["type"].endswith(f"/{code}")


def test_method_not_allowed_names_the_allowed_methods(client: TestClient) -> None:
    response = client.delete("/v1/devices")
    problem(response, 405)
    assert response.headers["allow"] == "GET, POST"


def test_an_unknown_path_is_a_404_problem(client: TestClient) -> None:
    problem(client.get("/v2/devices"), 404)


def test_the_document_states_the_constraints_and_every_answer(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    readings = document["paths"]["/v1/citizens/{citizen_id}/readings"]["get"]
    schemas = {p["name"]: p["schema"] for p in readings["parameters"]}
    assert schemas["metric"]["enum"] == list(METRICS)  # so `metric=` is documented as invalid
    for name in ("start", "end"):
        assert schemas[name]["pattern"] == TIME_PATTERN and schemas[name]["format"] == "date-time"
        assert schemas[name]["type"] == "string" and "anyOf" not in schemas[name]
    assert schemas["bucket"]["pattern"] == BUCKET_PATTERN
    assert (schemas["limit"]["minimum"], schemas["limit"]["maximum"]) == (1, 50_000)
    device = document["paths"]["/v1/devices/{device_id}"]["get"]
    assert device["parameters"][0]["schema"]["pattern"] == DEVICE_ID_PATTERN
    assert set(readings["responses"]) == set(device["responses"]) == {
        "200", "401", "404", "422", "500", "503"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                if status == "204":  # no content: nothing to type
                    assert "content" not in answer, (method, path)
                    continue
                expected = "application/json" if status < "400" else "application/problem+json"
                if status == "200":  # the answers that are not plain JSON, by what they are
                    expected = next((kind for part, kind in OTHER_CONTENT.items()
                                     if part in path), expected)
                assert list(answer["content"]) == [expected], (method, path, status)
    assert {"type", "title", "status", "detail"} <= set(
        document["components"]["schemas"]["Problem"]["required"])


OTHER_CONTENT = {"/stream": "text/event-stream", "/fhir/": "application/fhir+json",
                 "/export": "application/zip"}


def test_no_pattern_uses_unicode_digit_classes() -> None:
    for pattern in (TIME_PATTERN, DEVICE_ID_PATTERN, BUCKET_PATTERN):
        assert "\\d" not in pattern and "\\w" not in pattern


# st.datetimes takes naive bounds; the offset is attached below.
@given(moment=st.datetimes(min_value=datetime(1970, 1, 1),  # noqa: DTZ001
                           max_value=datetime(9999, 12, 31, 23, 59, 59)),  # noqa: DTZ001
       offset_minutes=st.integers(min_value=-(16 * 60 - 1), max_value=16 * 60 - 1))
def test_every_rfc_3339_time_in_range_round_trips(moment: datetime, offset_minutes: int) -> None:
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    text = aware.isoformat()
    assert ECMA["time"].search(text) and parse_time(text) == aware
    assert parse_time(text).utcoffset() == aware.utcoffset()


def test_an_offset_postgresql_cannot_take_is_refused() -> None:
    for text in ("2000-01-01T00:00:00+16:00", "2000-01-01T00:00:00-23:59"):
        assert not ECMA["time"].search(text)
        with pytest.raises(ValueError):
            parse_time(text)


@given(st.text() | st.from_regex(ECMA["time"]))
def test_the_time_parser_accepts_only_what_the_document_allows(text: str) -> None:
    try:
        parse_time(text)
    except ValueError:
        return
    assert ECMA["time"].search(text)


@given(st.from_regex(ECMA["time"]))
def test_every_time_the_pattern_allows_parses_unless_the_day_does_not_exist(text: str) -> None:
    try:
        parse_time(text)
    except ValueError as refused:
        assert str(refused) == "not a calendar date"
        with pytest.raises(ValueError):
            datetime.fromisoformat(text.upper())


@pytest.mark.parametrize(("name", "parse"), [("device", parse_device_id),
                                             ("bucket", parse_bucket)])
@given(data=st.data())
def test_ids_and_buckets_parse_exactly_what_their_patterns_allow(
        name: str, parse: Any, data: st.DataObject) -> None:
    text = data.draw(st.text() | st.from_regex(ECMA[name]))
    try:
        parse(text)
    except ValueError:
        assert not ECMA[name].search(text)
    else:
        assert ECMA[name].search(text)


def test_a_database_outage_is_a_503_problem_with_retry_after(database: str) -> None:
    pool = open_pool(process_dsn(database, "api"), max_size=1)
    app = create_app(Settings(database_url=database, auth_required=False), pool=pool)
    with TestClient(app) as client:
        pool.close()  # every request now fails to get a connection, as in an outage
        response = client.get("/v1/devices")
    problem(response, 503)
    assert response.headers["retry-after"] == "5"
