"""Plans, thresholds, rules and the alert lifecycle (arrives with the alerting issue)."""
