"""Anomaly detection on a citizen's own series, and the yardstick it is measured with (NAB)."""
