"""Measurement catalogue, device registry with pairings to citizens, and the readings time series."""
