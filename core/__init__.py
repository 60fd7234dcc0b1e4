"""Infrastructure shared by every package: settings, database, migrations, clock, errors."""
