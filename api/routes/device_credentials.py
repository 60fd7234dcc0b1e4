"""A device's broker credentials: issue, rotate, revoke, list; administrators only.

The secret is in the answer to issue and rotate, once, and never again (only its hash is kept).
A change reaches the broker when its password file and ACL are written again and it reloads
(`telecare broker config … --watch` does both, docs/deployment.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, ConfigDict

from api.deps import Caller, CallerDep, DbDep, NowDep, require_role
from api.params import DeviceId
from api.problems import responses
from devices import credentials
from devices.credentials import Credential, IssuedCredential

router = APIRouter(tags=["devices"])


class CredentialPublic(BaseModel):
    """A credential without its secret or hash."""

    model_config = ConfigDict(frozen=True)

    id: int
    device_id: str
    issued_at: datetime
    issued_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    in_force: bool

    @classmethod
    def of(cls, credential: Credential) -> CredentialPublic:
        return cls(**credential.model_dump(), in_force=credential.in_force)


class IssuedCredentialPublic(BaseModel):
    """The broker username (the device id) and the secret, shown this once."""

    model_config = ConfigDict(frozen=True)

    username: str
    secret: str
    credential: CredentialPublic

    @classmethod
    def of(cls, issued: IssuedCredential) -> IssuedCredentialPublic:
        return cls(username=issued.username, secret=issued.secret,
                   credential=CredentialPublic.of(issued.credential))


def _actor(caller: Caller) -> str:
    return caller.username or caller.subject


def _shown_once(response: Response) -> None:
    # Neither a browser nor a proxy keeps the answer that carries the secret.
    response.headers["Cache-Control"] = "no-store"


DevicePath = Annotated[DeviceId, Path()]


@router.get("/devices/{device_id}/credentials", response_model=list[CredentialPublic],
            responses=responses(403, 404, 422))
def list_credentials(device_id: DevicePath, conn: DbDep, caller: CallerDep) -> list[CredentialPublic]:
    """Every credential the device has had, newest first; none shows its secret."""
    require_role(caller, "administrator")
    return [CredentialPublic.of(c) for c in credentials.credentials(conn, device_id)]


@router.post("/devices/{device_id}/credentials", status_code=201,
             response_model=IssuedCredentialPublic, responses=responses(403, 404, 409, 422))
def issue_credentials(device_id: DevicePath, conn: DbDep, caller: CallerDep, now: NowDep,
                      response: Response) -> IssuedCredentialPublic:
    """Credentials for a device that has none in force (409 `credential_conflict` otherwise:
    rotate them); the secret is in this answer only."""
    require_role(caller, "administrator")
    _shown_once(response)
    return IssuedCredentialPublic.of(credentials.issue(conn, device_id, _actor(caller), now))


@router.post("/devices/{device_id}/credentials/rotate", response_model=IssuedCredentialPublic,
             responses=responses(403, 404, 422))
def rotate_credentials(device_id: DevicePath, conn: DbDep, caller: CallerDep, now: NowDep,
                       response: Response) -> IssuedCredentialPublic:
    """A new secret; the one in force is revoked at once (404 `credential_not_found` when the
    device has none: issue them)."""
    require_role(caller, "administrator")
    _shown_once(response)
    return IssuedCredentialPublic.of(credentials.rotate(conn, device_id, _actor(caller), now))


@router.delete("/devices/{device_id}/credentials", status_code=204,
               responses=responses(403, 404, 422))
def revoke_credentials(device_id: DevicePath, conn: DbDep, caller: CallerDep,
                       now: NowDep) -> Response:
    """The device's credential in force is revoked (404 `credential_not_found` when none is)."""
    require_role(caller, "administrator")
    credentials.revoke(conn, device_id, _actor(caller), now)
    return Response(status_code=204)
