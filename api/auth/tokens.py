"""Signed access tokens (JWT, HS256) and opaque refresh tokens.

The API trusts a token because of its signature, not because of a session row: an access token
is checked without the database (short-lived for that reason), and an external OpenID Connect
provider's tokens can later be checked the same way with its keys. Time comes from the caller's
clock, never from the library's."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import jwt

from api.auth.errors import NotSignedIn
from api.auth.models import ROLES, User
from core.settings import Settings

log = logging.getLogger(__name__)

ISSUER = "telecare"
ALGORITHM = "HS256"
# Clocks of several API processes differ a little.
LEEWAY = timedelta(seconds=10)
MIN_KEY_BYTES = 32  # RFC 7518: an HS256 key at least as long as the hash


@dataclass(frozen=True)
class AccessClaims:
    """What a valid access token says about its bearer."""

    user_id: UUID
    username: str
    role: str
    expires_at: datetime
    # The user's token_generation when it was issued (a new password or disabling counts up).
    generation: int


def signing_key(settings: Settings) -> str:
    """The configured key, or a random one for this process (logged: tokens die with it)."""
    if settings.auth_signing_key is None:
        log.warning("no TELECARE_AUTH_SIGNING_KEY: this API process signs with a random key; "
                    "its tokens are valid only here and until it stops")
        return secrets.token_urlsafe(MIN_KEY_BYTES)
    key = settings.auth_signing_key.get_secret_value()
    if len(key.encode()) < MIN_KEY_BYTES:
        raise ValueError(f"TELECARE_AUTH_SIGNING_KEY needs at least {MIN_KEY_BYTES} bytes")
    return key


def issue_access_token(user: User, key: str, now: datetime, ttl: timedelta) -> str:
    claims = {"iss": ISSUER, "sub": str(user.id), "name": user.username, "role": user.role,
              "iat": int(now.timestamp()), "exp": int((now + ttl).timestamp()),
              "jti": secrets.token_hex(8), "gen": user.token_generation}
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def read_access_token(token: str, key: str, now: datetime) -> AccessClaims:
    """The claims of a token we signed that has not expired at `now`; NotSignedIn otherwise."""
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM], issuer=ISSUER,
                            options={"verify_exp": False, "verify_iat": False,
                                     "require": ["iss", "sub", "exp", "iat", "role", "name",
                                                 "gen"]})
        expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC)
        user_id = UUID(str(claims["sub"]))
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:
        raise NotSignedIn("the access token is not valid") from exc
    if now > expires_at + LEEWAY:
        raise NotSignedIn("the access token has expired")
    generation = claims["gen"]
    if (claims["role"] not in ROLES or not isinstance(claims["name"], str)
            or not isinstance(generation, int) or isinstance(generation, bool)):
        raise NotSignedIn("the access token is not valid")
    return AccessClaims(user_id, claims["name"], claims["role"], expires_at, generation)


def new_refresh_token() -> str:
    """256 random bits; only their hash is stored."""
    return secrets.token_urlsafe(32)


def refresh_token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
