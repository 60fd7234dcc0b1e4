"""Keyed pseudonyms of citizens, per pilot (docs/access.md, "Project leads").

pseudonym = the first 50 bits of HMAC-SHA256(key, "telecare-pseudonym-v1" || pilot id ||
citizen id), in Crockford base32 as XXXXX-XXXXX.

- Keyed: without the key nobody can recompute a pseudonym from a citizen id (a plain hash of
  a uuid could be matched against every citizen id in a copy of the database). The key is in
  the settings or a file, never in the database, and the HMAC is computed here, never in SQL:
  a key sent as a query parameter would end up in the server's statement logs.
- Per pilot: the pilot id is part of the message, so one citizen's pseudonyms in two pilots
  cannot be joined; two evaluations together would otherwise describe one person more
  closely than either does alone.
- Stable: the same key, pilot and citizen give the same pseudonym in every process and export;
  a new key gives new pseudonyms for everyone (rotating it unlinks earlier exports).
- 50 bits: readable in a spreadsheet, and collisions stay negligible at pilot sizes (about
  n^2 / 2^51: one in ten million for 1,000 citizens).
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from uuid import UUID

from core.settings import Settings

MIN_KEY_LENGTH = 32
_DOMAIN = b"telecare-pseudonym-v1"
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
_CHARS = 10


def key_of(settings: Settings) -> bytes | None:
    """The configured pseudonym key (TELECARE_PSEUDONYM_KEY, else the file named by
    TELECARE_PSEUDONYM_KEY_FILE), or None when neither is set. A key that is too short or a
    file that cannot be read is an error at start, not a silent 503 later."""
    if settings.pseudonym_key is not None:
        text = settings.pseudonym_key.get_secret_value()
        where = "TELECARE_PSEUDONYM_KEY"
    elif settings.pseudonym_key_file:
        try:
            text = Path(settings.pseudonym_key_file).read_text().strip()
        except OSError as exc:
            raise ValueError(f"TELECARE_PSEUDONYM_KEY_FILE cannot be read: {exc}") from None
        where = "the file of TELECARE_PSEUDONYM_KEY_FILE"
    else:
        return None
    if len(text) < MIN_KEY_LENGTH:
        raise ValueError(f"{where} holds a key of {len(text)} characters; at least "
                         f"{MIN_KEY_LENGTH} are needed")
    return text.encode()


def pseudonym(key: bytes, pilot_id: UUID, citizen_id: UUID) -> str:
    """The citizen's pseudonym in the pilot under `key`."""
    digest = hmac.new(key, _DOMAIN + pilot_id.bytes + citizen_id.bytes, hashlib.sha256).digest()
    bits = int.from_bytes(digest[:8], "big") >> (64 - 5 * _CHARS)
    chars = [_ALPHABET[(bits >> (5 * i)) & 31] for i in reversed(range(_CHARS))]
    return "".join(chars[:5]) + "-" + "".join(chars[5:])
