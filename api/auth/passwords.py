"""Password hashing with argon2id (argon2-cffi's defaults: RFC 9106's second recommendation)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()
# Verified against when the username is unknown, so that the answer takes as long as for a
# known user and does not tell which usernames exist.
_UNKNOWN_USER_HASH = _HASHER.hash("no such user")

MIN_LENGTH = 12
MAX_LENGTH = 1024  # argon2 takes any length; a megabyte of password is an attack, not a password


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether `password` matches; None (no such user) spends the same time and is False."""
    try:
        return _HASHER.verify(stored_hash or _UNKNOWN_USER_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """Hashed with older parameters than today's: rehash at the next sign-in."""
    return _HASHER.check_needs_rehash(stored_hash)
