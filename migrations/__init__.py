"""The numbered plain-SQL migrations, shipped as package data (core.migrations applies them)."""
