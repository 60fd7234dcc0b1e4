"""Sign-in, refresh, sign-out, and the users behind them.

Failed sign-ins in a row are counted per username in the database (sign_in_failures), so
every API process sees the same count, and an unknown name is counted like a known one (the
answers never tell which exist): three cost nothing (typos), each further one blocks the next
try for twice as long as the one before (1 s, 2 s, 4 s ...), and from the tenth the name is
locked for 15 minutes at a time, until a sign-in succeeds or an administrator unlocks it
(`telecare users unlock`). A try while blocked is refused without looking at the password and
is not counted. The trade-off: anyone who knows a username can keep it locked with four
guesses an hour; per-client limits belong in front of the API (the reverse proxy).

The password is checked with no database connection held (argon2 takes 64 MiB and about
50 ms, at most a few at once per process): a flood of sign-ins cannot take the pool from the
rest of the API."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
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
Connect = Callable[[], AbstractContextManager[Conn]]

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

def sign_in(connect: Connect, username: str, password: str, now: datetime,
            policy: TokenPolicy) -> TokenPair:
    """A token pair for the right password; SignInRefused (one answer for an unknown user, a
    wrong password and a disabled user), SignInBlocked while failures hold the name,
    SignInBusy when the process is hashing all it may. `connect` gives a connection for a
    moment (the pool's), twice: before and after the password check."""
    name = username.strip().lower()
    if not USERNAME.fullmatch(name):
        # No user can have this name (a NUL, say), and it cannot be counted: refused, after
        # the same work as any other.
        verify_password(None, password)
        raise SignInRefused("wrong username or password")
    with connect() as conn, conn.transaction():
        until = repo.blocked_until(conn, name)
        user = repo.user_by_username(conn, name)
    if until is not None and until > now:
        raise SignInBlocked(math.ceil((until - now).total_seconds()))
    matches = verify_password(user.password_hash if user else None, password)
    with connect() as conn, conn.transaction():
        pair = _settle(conn, name, user, matches, password, now, policy)
    if pair is None:
        raise SignInRefused("wrong username or password")
    return pair


def _settle(conn: Conn, name: str, user: User | None, matches: bool, password: str,
            now: datetime, policy: TokenPolicy) -> TokenPair | None:
    """Count a failure, or clear the count and issue a pair (None: refused)."""
    if not matches:
        wait = blocked_for(repo.count_failure(conn, name, now))
        if wait is not None:
            repo.set_blocked(conn, name, now + wait)
        return None
    assert user is not None  # only a real hash matches
    if user.disabled_at is not None:
        return None
    repo.clear_failures(conn, name)
    if needs_rehash(user.password_hash):
        repo.set_password_hash(conn, user.id, hash_password(password))
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
    user = repo.user_by_id(conn, row.user_id, for_share=True)
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


def purge_old_sign_ins(conn: Conn, now: datetime) -> int:
    """The maintenance job: refresh tokens and failure counts that ended a day before `now`."""
    return repo.purge_before(conn, now - timedelta(days=1))


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
    """The user, locked until the transaction ends (a refresh beside it waits)."""
    user = repo.user_by_username(conn, username, for_update=True)
    if user is None:
        raise UserNotFound(f"no user {username!r}")
    return user


def disable_user(conn: Conn, username: str, now: datetime) -> None:
    """No more sign-ins or refreshes; every access token already out ends at once (and stays
    void if the user is enabled again)."""
    with conn.transaction():
        user = _existing(conn, username)
        repo.set_disabled(conn, user.id, now)
        repo.end_access_tokens(conn, user.id)
        repo.revoke_user_refresh(conn, user.id, now)


def enable_user(conn: Conn, username: str) -> None:
    with conn.transaction():
        repo.set_disabled(conn, _existing(conn, username).id, None)


def unlock(conn: Conn, username: str) -> None:
    """Forget the failed sign-ins of `username` (known or not): the next try is not held up."""
    with conn.transaction():
        repo.clear_failures(conn, username)


def set_password(conn: Conn, username: str, password: str, now: datetime) -> None:
    """A new password (and an end to any lock); every sign-in with the old one is revoked:
    its refresh tokens, and its access tokens at once."""
    hashed = hash_password(_valid_password(password))
    with conn.transaction():
        user = _existing(conn, username)
        repo.set_password_hash(conn, user.id, hashed)
        repo.end_access_tokens(conn, user.id)
        repo.clear_failures(conn, user.username)
        repo.revoke_user_refresh(conn, user.id, now)


def users(conn: Conn) -> list[User]:
    return repo.users(conn)


def blocked_usernames(conn: Conn, now: datetime) -> set[str]:
    """Names whose next sign-in is held up at `now`."""
    return repo.blocked_usernames(conn, now)
