"""Device credentials in the registry (real PostgreSQL): the hash is Mosquitto's own format,
only the hash is stored, one credential in force per device, rotation revokes at once."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices import credentials
from devices.credentials import CredentialConflict, CredentialNotFound, ReservedUsername
from devices.errors import DeviceNotFound
from tests.conftest import new_device

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def conn(postgres_database: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_database, autocommit=True) as connection:
        yield connection


def mosquitto_passwd() -> str:
    found = shutil.which("mosquitto_passwd")
    if found is None:
        pytest.skip("mosquitto_passwd (Mosquitto 2.0) is not installed: the hash format cannot "
                    "be compared with the broker's own tool")
    return found


def test_hashes_are_in_the_format_mosquitto_passwd_writes_and_verify_each_other(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.touch()
    subprocess.run([mosquitto_passwd(), "-b", str(path), "dev-A", "the secret"], check=True)
    theirs = path.read_text().strip().split(":", 1)[1]
    ours = credentials.mosquitto_hash("the secret")
    assert theirs.split("$")[:3] == ours.split("$")[:3] == ["", "7", "101"]
    assert [len(part) for part in theirs.split("$")[3:]] == [len(p) for p in ours.split("$")[3:]]
    assert credentials.verify("the secret", theirs) and credentials.verify("the secret", ours)
    assert not credentials.verify("the secret!", theirs)
    assert not credentials.verify("the secret", "$6$" + theirs[3:])


@given(st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s))
def test_a_secret_verifies_against_its_own_hash_only(secret: str) -> None:
    hashed = credentials.mosquitto_hash(secret, iterations=2)
    assert credentials.verify(secret, hashed)
    assert not credentials.verify(secret + "x", hashed)


def stored(conn: psycopg.Connection[Any], device_id: str) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT password_hash, revoked_at FROM device_credentials WHERE device_id = %s"
                        " ORDER BY id", (device_id,)).fetchall()


def test_issue_shows_the_secret_once_and_stores_only_its_hash(conn: psycopg.Connection[Any]) -> None:
    device_id, _ = new_device(conn)
    issued = credentials.issue(conn, device_id, "admin", T0)
    assert issued.username == device_id and len(issued.secret) >= 43
    [(password_hash, revoked_at)] = stored(conn, device_id)
    assert revoked_at is None and issued.secret not in password_hash
    assert credentials.verify(issued.secret, password_hash)
    assert (device_id, password_hash) in credentials.in_force(conn)
    [listed] = credentials.credentials(conn, device_id)
    assert listed.in_force and listed.issued_by == "admin" and "secret" not in listed.model_dump()
    with pytest.raises(CredentialConflict):
        credentials.issue(conn, device_id, "admin", T0)
    assert len(stored(conn, device_id)) == 1


def test_rotation_revokes_the_old_secret_in_the_same_transaction(conn: psycopg.Connection[Any]) -> None:
    device_id, _ = new_device(conn)
    first = credentials.issue(conn, device_id, "admin", T0)
    second = credentials.rotate(conn, device_id, "admin", T0 + timedelta(hours=1))
    assert first.secret != second.secret
    [(old_hash, old_revoked), (new_hash, new_revoked)] = stored(conn, device_id)
    assert old_revoked == T0 + timedelta(hours=1) and new_revoked is None
    in_force = dict(credentials.in_force(conn))
    assert in_force[device_id] == new_hash != old_hash
    assert credentials.verify(second.secret, in_force[device_id])
    assert not credentials.verify(first.secret, in_force[device_id])
    assert [c.in_force for c in credentials.credentials(conn, device_id)] == [True, False]


def test_revoke_leaves_nothing_in_force_and_issue_works_again(conn: psycopg.Connection[Any]) -> None:
    device_id, _ = new_device(conn)
    credentials.issue(conn, device_id, "admin", T0)
    credentials.revoke(conn, device_id, "admin", T0 + timedelta(minutes=1))
    assert device_id not in dict(credentials.in_force(conn))
    with pytest.raises(CredentialNotFound):
        credentials.revoke(conn, device_id, "admin", T0 + timedelta(minutes=2))
    with pytest.raises(CredentialNotFound):
        credentials.rotate(conn, device_id, "admin", T0 + timedelta(minutes=2))
    again = credentials.issue(conn, device_id, "admin", T0 + timedelta(minutes=3))
    assert dict(credentials.in_force(conn))[device_id] == stored(conn, device_id)[-1][0]
    assert again.credential.in_force


def test_unknown_devices_and_service_account_names_are_refused(conn: psycopg.Connection[Any]) -> None:
    for change in (credentials.issue, credentials.rotate, credentials.revoke):
        with pytest.raises(DeviceNotFound):
            change(conn, "no-such-device", "admin", T0)
    with pytest.raises(DeviceNotFound):
        credentials.credentials(conn, "no-such-device")
    for name in credentials.SERVICE_ACCOUNTS:
        with pytest.raises(ReservedUsername):
            credentials.issue(conn, name, "admin", T0)


def test_the_table_refuses_a_second_credential_in_force_and_a_hash_of_another_format(
        conn: psycopg.Connection[Any]) -> None:
    device_id, _ = new_device(conn)
    credentials.issue(conn, device_id, "admin", T0)
    insert = ("INSERT INTO device_credentials (device_id, password_hash, issued_at, issued_by) "
              "VALUES (%s, %s, %s, 'x')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(insert, (device_id, credentials.mosquitto_hash("s"), T0))
    other, _ = new_device(conn)
    for not_a_hash in ("plain secret", "$6$abc$def", "$7$101$abc$def:user"):
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(insert, (other, not_a_hash, T0))
