"""Users and the tokens they sign in with."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args
from uuid import UUID

Role = Literal["administrator", "nurse", "project_lead", "citizen", "relative", "service"]
ROLES: tuple[str, ...] = get_args(Role)


@dataclass(frozen=True)
class User:
    id: UUID
    username: str
    display_name: str
    role: Role
    created_at: datetime
    disabled_at: datetime | None
    # Counted up by a new password and by disabling: access tokens of an older one are void.
    token_generation: int = 0
    password_hash: str = field(repr=False, default="")


@dataclass(frozen=True)
class TokenPair:
    """What a sign-in or a refresh hands out."""

    access_token: str
    expires_in: int  # seconds the access token is valid
    refresh_token: str = field(repr=False)
