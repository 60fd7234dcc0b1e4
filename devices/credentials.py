"""Device credentials on the broker: issue, rotate, revoke, list.

A device logs in with its device id as username and a random secret that is shown once, when
it is issued or rotated; only its hash is stored, in Mosquitto's password-file format, and the
broker's password file and its dynamic-security access control are written from the credentials
in force (telecare/broker.py).

Rotation replaces the secret at once: the old one is revoked in the same transaction. An
overlap is not possible on Mosquitto's password file (one hash per username, and the username
must be the device id), and is not wanted either: a secret is rotated because it may have
leaked. On the next broker reload Mosquitto 2.0.11 checks every connected client against the
new file and disconnects one whose secret no longer matches (tests/deploy/test_broker_acl.py),
so the device must get its new secret (re-provisioning) when it is rotated.

Hashes: PBKDF2-HMAC-SHA512 with a 12-byte salt, `$7$<iterations>$<salt>$<hash>` as
mosquitto_passwd writes them. Device secrets are 256 random bits, which no iteration count
makes safer to store; the broker computes the hash on every connect and, at every reload, for
every connected client, single-threaded, so device hashes use mosquitto_passwd's own 101
iterations (0.2 ms each). Service accounts, whose passwords an operator chooses (make them
random: `openssl rand -base64 32`), use 10,000 (about 10 ms per connect): a CONNACK slower than
0.2 s sends the ingest worker into a reconnect loop (it reconnects before its first CONNACK)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime

import psycopg
from pydantic import AwareDatetime, BaseModel, ConfigDict

from core.errors import Conflict, InvalidInput, NotFound
from devices import credentials_repository as repository
from devices.errors import DeviceNotFound
from devices.repository import Conn, device_kind

DEVICE_ITERATIONS = 101
SERVICE_ITERATIONS = 10_000
SALT_BYTES = 12
SECRET_BYTES = 32
# The broker accounts of Telecare's own processes (deploy/ and compose.yaml use these names):
# no device may log in under one of them.
SERVICE_ACCOUNTS = ("ingest", "alerts", "broker-admin")
_HASH = re.compile(r"^\$7\$([1-9][0-9]{0,8})\$([A-Za-z0-9+/]+=*)\$([A-Za-z0-9+/]+=*)$")


class CredentialNotFound(NotFound):
    """The device has no credential in force (to rotate or revoke)."""

    code = "credential_not_found"


class CredentialConflict(Conflict):
    """The device has a credential in force already: rotate it instead."""

    code = "credential_conflict"


class ReservedUsername(InvalidInput):
    """A device id that is one of the service accounts' usernames on the broker."""

    code = "reserved_username"


class Credential(BaseModel):
    """A credential as the registry keeps it: never the secret, nor its hash."""

    model_config = ConfigDict(frozen=True)

    id: int
    device_id: str
    issued_at: AwareDatetime
    issued_by: str
    revoked_at: AwareDatetime | None = None
    revoked_by: str | None = None

    @property
    def in_force(self) -> bool:
        return self.revoked_at is None


class IssuedCredential(BaseModel):
    """What issuing or rotating answers, once: the username and the secret to give the device."""

    model_config = ConfigDict(frozen=True)

    credential: Credential
    username: str
    secret: str


def new_secret() -> str:
    """256 random bits, URL-safe base64 (43 characters, no ':' or whitespace)."""
    return secrets.token_urlsafe(SECRET_BYTES)


def mosquitto_hash(secret: str, iterations: int = DEVICE_ITERATIONS,
                   salt: bytes | None = None) -> str:
    """`secret` hashed as Mosquitto 2.0's password file holds it (PBKDF2-SHA512, `$7$`)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}"
            f"${base64.b64encode(digest).decode()}")


def verify(secret: str, password_hash: str) -> bool:
    """Whether `secret` matches a `$7$` hash, as the broker would decide."""
    match = _HASH.fullmatch(password_hash)
    if match is None:
        return False
    iterations, salt, digest = match.groups()
    computed = hashlib.pbkdf2_hmac("sha512", secret.encode(), base64.b64decode(salt),
                                   int(iterations))
    return hmac.compare_digest(computed, base64.b64decode(digest))


def issue(conn: Conn, device_id: str, actor: str, now: datetime) -> IssuedCredential:
    """First credentials of a device (or new ones after a revocation); a device with a
    credential in force is a conflict (rotate it)."""
    _refuse_reserved(device_id)
    secret = new_secret()
    try:
        with conn.transaction():
            if not repository.lock_device(conn, device_id):
                raise DeviceNotFound(f"no device {device_id!r}")
            row = repository.insert_credential(conn, device_id, mosquitto_hash(secret), now, actor)
    except psycopg.errors.UniqueViolation:
        raise CredentialConflict(f"device {device_id} has credentials in force; rotate or "
                                 "revoke them") from None
    return IssuedCredential(credential=Credential(**row), username=device_id, secret=secret)


def rotate(conn: Conn, device_id: str, actor: str, now: datetime) -> IssuedCredential:
    """A new secret for the device; the one in force is revoked in the same transaction."""
    _refuse_reserved(device_id)
    secret = new_secret()
    with conn.transaction():
        if not repository.lock_device(conn, device_id):
            raise DeviceNotFound(f"no device {device_id!r}")
        if not repository.revoke_in_force(conn, device_id, now, actor):
            raise CredentialNotFound(f"device {device_id} has no credentials in force; issue them")
        row = repository.insert_credential(conn, device_id, mosquitto_hash(secret), now, actor)
    return IssuedCredential(credential=Credential(**row), username=device_id, secret=secret)


def revoke(conn: Conn, device_id: str, actor: str, now: datetime) -> None:
    """The device's credential in force is revoked; the broker refuses it after its reload."""
    with conn.transaction():
        if not repository.lock_device(conn, device_id):
            raise DeviceNotFound(f"no device {device_id!r}")
        if not repository.revoke_in_force(conn, device_id, now, actor):
            raise CredentialNotFound(f"device {device_id} has no credentials in force")


def credentials(conn: Conn, device_id: str) -> list[Credential]:
    """Every credential the device has had, newest first (none is shown with its hash)."""
    rows = repository.credentials_of(conn, device_id)
    if not rows and device_kind(conn, device_id) is None:
        raise DeviceNotFound(f"no device {device_id!r}")
    return [Credential(**row) for row in rows]


def in_force(conn: Conn) -> list[tuple[str, str]]:
    """(device_id, password_hash) of every credential in force: what the broker may admit."""
    return repository.in_force(conn)


def _refuse_reserved(device_id: str) -> None:
    if device_id in SERVICE_ACCOUNTS:
        raise ReservedUsername(f"{device_id!r} is a service account's username on the broker; "
                               "register the device under another id")
