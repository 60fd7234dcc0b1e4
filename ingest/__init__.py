"""MQTT ingest: wire payloads, decoding, the batch pipeline and the paho worker."""
