"""Password hashing with argon2id (argon2-cffi's defaults: RFC 9106's second recommendation)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from api.auth.errors import SignInBusy

_HASHER = PasswordHasher()
# Verified against when the username is unknown, so that the answer takes as long as for a
# known user and does not tell which usernames exist.
_UNKNOWN_USER_HASH = _HASHER.hash("no such user")

# Each hash takes 64 MiB and about 50 ms of a core: at most this many at once per process, so
# that a flood of sign-ins costs a bounded amount of memory and leaves CPU for the rest.
CONCURRENT_HASHES = 4
WAIT_FOR_A_TURN_S = 5.0
_TURNS = threading.BoundedSemaphore(CONCURRENT_HASHES)

MIN_LENGTH = 12
MAX_LENGTH = 1024  # argon2 takes any length; a megabyte of password is an attack, not a password


@contextmanager
def _turn() -> Iterator[None]:
    """One of the process's hashing turns; SignInBusy when none comes free in time."""
    if not _TURNS.acquire(timeout=WAIT_FOR_A_TURN_S):
        raise SignInBusy("too many sign-ins at once; try again shortly")
    try:
        yield
    finally:
        _TURNS.release()


def hash_password(password: str) -> str:
    with _turn():
        return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """Whether `password` matches; None (no such user) spends the same time and is False."""
    with _turn():
        try:
            return _HASHER.verify(stored_hash or _UNKNOWN_USER_HASH, password) \
                and stored_hash is not None
        except (VerificationError, InvalidHashError):
            return False


def needs_rehash(stored_hash: str) -> bool:
    """Hashed with older parameters than today's: rehash at the next sign-in."""
    return _HASHER.check_needs_rehash(stored_hash)
