"""Sign-in errors; api/problems.py maps them to statuses."""

from core.errors import Conflict, InvalidInput, NotFound, TelecareError


class NotSignedIn(TelecareError):
    """No valid access token: missing where one is needed, expired, or not signed by us."""

    code = "not_signed_in"
    headers = {"WWW-Authenticate": 'Bearer realm="telecare"'}


class NotAllowed(TelecareError):
    """Signed in, but this role may not do this."""

    code = "forbidden"


class InvalidPurpose(InvalidInput):
    """A purpose of use the audit log does not know."""

    code = "invalid_purpose"


class SignInRefused(TelecareError):
    """Wrong username or password, a disabled user, or a refresh token that is not valid.
    One answer for all, so that it does not tell which."""

    code = "invalid_grant"


class SignInBlocked(TelecareError):
    """Too many failed sign-ins: the next try is refused until `retry_after_s` has passed."""

    code = "sign_in_blocked"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed sign-ins; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s
        self.headers = {"Retry-After": str(retry_after_s)}


class SignInBusy(TelecareError):
    """Every password-hashing turn of this process is taken (a flood of sign-ins)."""

    code = "sign_in_busy"
    headers = {"Retry-After": "1"}


class InvalidUser(InvalidInput):
    code = "invalid_user"


class UserConflict(Conflict):
    code = "user_conflict"


class UserNotFound(NotFound):
    code = "user_not_found"
