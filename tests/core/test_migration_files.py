"""Migration files: shipped with the package, checked against what a database was built by."""

import subprocess
import sys
from pathlib import Path

import pytest

from core.migrations import MigrationMismatch, load_migrations, migrate


def test_a_regular_install_carries_the_migrations(tmp_path: Path) -> None:
    """Not only an editable checkout: the SQL is package data, so an image finds it too."""
    repo = Path(__file__).parents[2]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(tmp_path / "site"), str(repo)],
                   check=True, capture_output=True, timeout=300)
    found = subprocess.run([sys.executable, "-c", "from core.migrations import load_migrations; "
                            "print(len(load_migrations()))"], cwd=tmp_path, check=True,
                           capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path / "site")})
    assert int(found.stdout) == len(load_migrations())


def test_a_database_migrated_by_other_sql_is_refused(database: str, tmp_path: Path) -> None:
    changed = tmp_path / "migrations"
    changed.mkdir()
    for migration in load_migrations():
        sql = migration.sql + ("\n-- edited\n" if migration.version == 2 else "")
        (changed / f"{migration.name}.sql").write_text(sql)
    with pytest.raises(MigrationMismatch, match="0002"):
        migrate(database, directory=changed)


def test_an_empty_migrations_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no migrations"):
        load_migrations(tmp_path)
