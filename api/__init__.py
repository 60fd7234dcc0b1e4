"""The HTTP API (FastAPI): readings, devices, dead letters, health; errors as problem+json."""
