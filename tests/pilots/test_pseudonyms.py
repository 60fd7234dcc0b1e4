"""Keyed pseudonyms: the format, per pilot, per key; the key from the settings or a file."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from core.settings import Settings
from pilots.pseudonyms import key_of, pseudonym

KEY = b"k" * 32


def test_readable_stable_per_pilot_and_per_key() -> None:
    pilot, other_pilot, citizen = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    first = pseudonym(KEY, pilot, citizen)
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}", first)
    assert pseudonym(KEY, pilot, citizen) == first
    assert pseudonym(KEY, other_pilot, citizen) != first
    assert pseudonym(b"j" * 32, pilot, citizen) != first
    assert pseudonym(KEY, pilot, uuid.uuid4()) != first


def test_the_key_from_the_setting_or_its_file(tmp_path: Path) -> None:
    assert key_of(Settings()) is None
    assert key_of(Settings(pseudonym_key=SecretStr("x" * 32))) == b"x" * 32
    path = tmp_path / "key"
    path.write_text("y" * 40 + "\n")
    assert key_of(Settings(pseudonym_key_file=str(path))) == b"y" * 40
    with pytest.raises(ValueError, match="at least 32"):
        key_of(Settings(pseudonym_key=SecretStr("short")))
    with pytest.raises(ValueError, match="cannot be read"):
        key_of(Settings(pseudonym_key_file=str(tmp_path / "missing")))
