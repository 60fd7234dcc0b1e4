"""The Numenta Anomaly Benchmark's scoring rules, reimplemented, and its file formats."""
