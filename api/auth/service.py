"""Sign-in, refresh, sign-out, and the users behind them.

Failed sign-ins are counted on the user's row, under its lock, so that every API process sees
the same count: three cost nothing (typos), each further one blocks the next try for twice as
long as the one before (1 s, 2 s, 4 s ...), and from the tenth the account is locked for 15
minutes at a time, until a sign-in succeeds. A try while blocked is refused without looking at
the password, and is not counted (else anyone could keep a nurse locked out for good)."""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from api.auth import repository as repo
from api.auth.errors import InvalidUser, SignInBlocked, SignInRefused, UserConflict, UserNotFound
from api.auth.models import ROLES, TokenPair, User
from api.auth.passwords import MAX_LENGTH, MIN_LENGTH, hash_password, needs_rehash, verify_password
from api.auth.tokens import issue_access_token, new_refresh_token, refresh_token_hash

Conn = psycopg.Connection[Any]

FREE_FAILURES = 3
LOCK_AFTER = 10
LOCK_TIME = timedelta(minutes=15)
USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,99}")


@dataclass(frozen=True)
class TokenPolicy:
    """How tokens are signed and how long they last (from Settings, built once per app)."""

    key: str
    access_ttl: timedelta
    refresh_ttl: timedelta


def blocked_for(failures: int) -> timedelta | None:
    """How long the next try waits after `failures` failed sign-ins in a row."""
    if failures >= LOCK_AFTER:
        return LOCK_TIME
    if failures > FREE_FAILURES:
        return timedelta(seconds=2 ** (failures - FREE_FAILURES - 1))
    return None


# --- signing in -----------------------------------------------------------------------------

def sign_in(conn: Conn, username: str, password: str, now: datetime,
            policy: TokenPolicy) -> TokenPair:
    """A token pair for the right password; SignInRefused (one answer for an unknown user, a
    wrong password and a disabled user), SignInBlocked while failures hold the account."""
    blocked, pair = 0, None
    with conn.transaction():
        name = username.strip().lower()
        # A name no user can have (a NUL, say) is not looked up, but costs the same time.
        user = repo.user_by_username(conn, name, for_update=True) if USERNAME.fullmatch(name) else None
        if user is not None and user.blocked_until is not None and user.blocked_until > now:
            blocked = math.ceil((user.blocked_until - now).total_seconds())
        else:
            pair = _check_password(conn, user, password, now, policy)
    # Raised only now: the failure count above must commit.
    if blocked:
        raise SignInBlocked(blocked)
    if pair is None:
        raise SignInRefused("wrong username or password")
    return pair


def _check_password(conn: Conn, user: User | None, password: str, now: datetime,
                    policy: TokenPolicy) -> TokenPair | None:
    matches = verify_password(user.password_hash if user else None, password)
    if user is None:
        return None
    if not matches:
        failures = user.failed_sign_ins + 1
        wait = blocked_for(failures)
        repo.record_failure(conn, user.id, failures, None if wait is None else now + wait)
        return None
    if user.disabled_at is not None:
        return None
    rehashed = hash_password(password) if needs_rehash(user.password_hash) else None
    repo.record_success(conn, user.id, rehashed)
    return _issue(conn, user, uuid.uuid4(), now, policy)


def _issue(conn: Conn, user: User, family: uuid.UUID, now: datetime,
           policy: TokenPolicy) -> TokenPair:
    refresh = new_refresh_token()
    repo.insert_refresh(conn, uuid.uuid4(), user.id, family, refresh_token_hash(refresh), now,
                        now + policy.refresh_ttl)
    return TokenPair(access_token=issue_access_token(user, policy.key, now, policy.access_ttl),
                     expires_in=int(policy.access_ttl.total_seconds()), refresh_token=refresh)


def refresh(conn: Conn, refresh_token: str, now: datetime, policy: TokenPolicy) -> TokenPair:
    """The next pair of the token's family; the token itself is spent. A spent or revoked
    token presented again revokes its whole family (a copy is in someone else's hands).
    SignInRefused for any token that does not give a pair."""
    with conn.transaction():
        pair = _rotate(conn, refresh_token, now, policy)
    if pair is None:
        raise SignInRefused("the refresh token is not valid")
    return pair


def _rotate(conn: Conn, refresh_token: str, now: datetime, policy: TokenPolicy) -> TokenPair | None:
    row = repo.refresh_by_hash(conn, refresh_token_hash(refresh_token))
    if row is None:
        return None
    if row.revoked_at is not None:
        repo.revoke_family(conn, row.family, now)
        return None
    user = repo.user_by_id(conn, row.user_id)
    if row.expires_at <= now or user is None or user.disabled_at is not None:
        return None
    repo.revoke_refresh(conn, row.id, now)
    return _issue(conn, user, row.family, now, policy)


def sign_out(conn: Conn, refresh_token: str, now: datetime) -> None:
    """Revoke the token's family (every later refresh of this sign-in); unknown tokens are
    ignored, as RFC 7009 asks."""
    with conn.transaction():
        row = repo.refresh_by_hash(conn, refresh_token_hash(refresh_token))
        if row is not None:
            repo.revoke_family(conn, row.family, now)


# --- users ----------------------------------------------------------------------------------

def _valid_password(password: str) -> str:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise InvalidUser(f"a password has {MIN_LENGTH} to {MAX_LENGTH} characters")
    return password


def create_user(conn: Conn, username: str, display_name: str, role: str, password: str,
                now: datetime) -> User:
    """A new user; InvalidUser (username, role, password), UserConflict (username taken)."""
    if not USERNAME.fullmatch(username):
        raise InvalidUser("a username is 1-100 of a-z 0-9 . _ @ -, starting with a letter or digit")
    if role not in ROLES:
        raise InvalidUser(f"role must be one of {', '.join(ROLES)}")
    if not 1 <= len(display_name.strip()) <= 200:
        raise InvalidUser("a display name has 1 to 200 characters")
    hashed = hash_password(_valid_password(password))
    try:
        with conn.transaction():
            return repo.insert_user(conn, username, display_name.strip(), role, hashed, now)
    except psycopg.errors.UniqueViolation:
        raise UserConflict(f"the username {username!r} is taken") from None


def _existing(conn: Conn, username: str) -> User:
    user = repo.user_by_username(conn, username)
    if user is None:
        raise UserNotFound(f"no user {username!r}")
    return user


def disable_user(conn: Conn, username: str, now: datetime) -> None:
    """No more sign-ins or refreshes; access tokens already out end within their lifetime."""
    with conn.transaction():
        user = _existing(conn, username)
        repo.set_disabled(conn, user.id, now)
        repo.revoke_user_refresh(conn, user.id, now)


def enable_user(conn: Conn, username: str) -> None:
    with conn.transaction():
        repo.set_disabled(conn, _existing(conn, username).id, None)


def set_password(conn: Conn, username: str, password: str, now: datetime) -> None:
    """A new password (and an end to any lock); every sign-in with the old one is revoked."""
    hashed = hash_password(_valid_password(password))
    with conn.transaction():
        user = _existing(conn, username)
        repo.set_password(conn, user.id, hashed)
        repo.revoke_user_refresh(conn, user.id, now)


def users(conn: Conn) -> list[User]:
    return repo.users(conn)
