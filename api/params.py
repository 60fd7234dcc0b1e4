"""What the API accepts in paths and query strings, with the same rule in the OpenAPI document.

Each parameter type here is checked by one strict parser and documented by a schema whose
pattern accepts exactly what that parser accepts, so a client (or schemathesis) can trust the
document: a value the schema allows is never refused for its form, and a value it forbids is
always refused with 422. Patterns are ASCII only ([0-9], never \\d, which in Python also
matches digits such as '１'), and Python applies them with fullmatch (a `$` there would also
accept a trailing newline)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from pydantic import PlainValidator, WithJsonSchema

from devices.catalogue import METRICS
from devices.models import DEVICE_ID_PATTERN

# Years as written, not after conversion to UTC: a bound applied after conversion cannot be
# said exactly by a pattern. Four-digit years from 1970 also keep every datetime the API
# computes from them (a default range, a bucket origin) inside Python's range, whatever the
# offset.
_YEAR = "19[7-9][0-9]|[2-9][0-9]{3}"
_MONTH = "0[1-9]|1[0-2]"
_DAY = "0[1-9]|[12][0-9]|3[01]"
_HOUR = "[01][0-9]|2[0-3]"
_SIXTY = "[0-5][0-9]"
# PostgreSQL takes UTC offsets up to 15:59 (a +16:00 in a query parameter is its error, a 500).
_OFFSET_HOUR = "0[0-9]|1[0-5]"
_TIME_BODY = (
    f"(?P<year>{_YEAR})-(?P<month>{_MONTH})-(?P<day>{_DAY})[Tt]"
    f"(?P<hour>{_HOUR}):(?P<minute>{_SIXTY}):(?P<second>{_SIXTY})(?:\\.(?P<fraction>[0-9]{{1,9}}))?"
    f"(?:(?P<utc>[Zz])|(?P<sign>[+-])(?P<off_hour>{_OFFSET_HOUR}):(?P<off_minute>{_SIXTY}))"
)
_TIME = re.compile(_TIME_BODY)
# The document's copy, in the ECMA-262 dialect JSON Schema uses: anchored, no named groups.
TIME_PATTERN = "^" + re.sub(r"\(\?P<[a-z_]+>", "(?:", _TIME_BODY) + "$"
EARLIEST_YEAR, LATEST_YEAR = 1970, 9999


_DEVICE_ID = re.compile(DEVICE_ID_PATTERN[1:-1])

# A whole number without leading zeros and a unit. Four digits bound a bucket to 9999 days, so
# bucket starts (aligned to an origin in 2000) stay inside Python's datetime range.
BUCKET_PATTERN = "^[1-9][0-9]{0,3}[smhd]$"
_BUCKET = re.compile("(?P<count>[1-9][0-9]{0,3})(?P<unit>[smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(value: object) -> datetime:
    """An RFC 3339 date-time with a UTC offset, years 1970 to 9999 as written; keeps its offset."""
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("must be an RFC 3339 date-time with a UTC offset, years "
                         f"{EARLIEST_YEAR} to {LATEST_YEAR}, e.g. 2026-11-23T08:00:00+01:00")
    part = match.groupdict()
    offset = timedelta(0)
    if part["sign"] is not None:
        offset = timedelta(hours=int(part["off_hour"]), minutes=int(part["off_minute"]))
        offset = -offset if part["sign"] == "-" else offset
    microsecond = int((part["fraction"] or "0").ljust(6, "0")[:6])
    try:
        return datetime(int(part["year"]), int(part["month"]), int(part["day"]),
                        int(part["hour"]), int(part["minute"]), int(part["second"]), microsecond,
                        tzinfo=timezone(offset))
    except ValueError:  # a day the month does not have
        raise ValueError("not a calendar date") from None


def parse_device_id(value: object) -> str:
    """A device id as the registry allows it: 1 to 64 of A-Z a-z 0-9 _ -."""
    if not isinstance(value, str) or _DEVICE_ID.fullmatch(value) is None:
        raise ValueError("a device id is 1 to 64 characters of A-Z, a-z, 0-9, _ and -")
    return value


def parse_metric(value: object) -> str:
    """A metric code from the catalogue (GET /v1/metrics)."""
    if not isinstance(value, str) or value not in METRICS:
        raise ValueError(f"unknown metric; known: {', '.join(METRICS)}")
    return value


def parse_bucket(value: object) -> timedelta:
    """'30s', '15m', '1h', '1d': 1 to 9999 of a unit."""
    match = _BUCKET.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError("bucket must look like 30s, 15m, 1h or 1d (1 to 9999 of s, m, h or d)")
    return timedelta(seconds=int(match["count"]) * _UNIT_SECONDS[match["unit"]])


def _documented(schema: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", **schema})


_TIME_VALIDATOR = PlainValidator(parse_time)
_TIME_SCHEMA = _documented({
    "format": "date-time", "pattern": TIME_PATTERN,
    "description": f"RFC 3339 with a UTC offset (Z or ±hh:mm), years {EARLIEST_YEAR} to "
                   f"{LATEST_YEAR} as written"})
_BUCKET_VALIDATOR = PlainValidator(parse_bucket)
_BUCKET_SCHEMA = _documented({
    "pattern": BUCKET_PATTERN,
    "description": "bucket width: 1 to 9999 seconds (s), minutes (m), hours (h) or days (d)"})

# The optional forms are documented as plain strings: a query parameter is present or absent,
# never null.
Time = Annotated[datetime, _TIME_VALIDATOR, _TIME_SCHEMA]
OptionalTime = Annotated[datetime | None, _TIME_VALIDATOR, _TIME_SCHEMA]
OptionalBucket = Annotated[timedelta | None, _BUCKET_VALIDATOR, _BUCKET_SCHEMA]
DeviceId = Annotated[str, PlainValidator(parse_device_id), _documented({
    "pattern": DEVICE_ID_PATTERN, "minLength": 1, "maxLength": 64})]
MetricCode = Annotated[str, PlainValidator(parse_metric), _documented({"enum": list(METRICS)})]
