"""Every PostgreSQL advisory lock key Telecare uses, in one place so that no two collide.

Any constants work; each only has to be the same in every process that takes it."""

MIGRATIONS = 0x7E1E_CA8E  # one migrating process at a time
PAIRINGS = 0x7E1E_CA90  # shared by ingest batches, exclusive for a pairing change
MAINTENANCE = 0x7E1E_CA8F  # one maintenance run at a time
ALERTS_LEADER = 0x7E1E_CA91  # held for its session by the one leading `telecare alerts`
