"""Pilot cohorts, KPIs and evaluation exports (arrives with the pilot-evaluation issue)."""
