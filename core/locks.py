"""Every PostgreSQL advisory lock key Telecare uses, in one place so that no two collide.

Any constants work; each only has to be the same in every process that takes it."""

MIGRATIONS = 0x7E1E_CA8E  # one migrating process at a time
PAIRINGS = 0x7E1E_CA90  # shared by ingest batches, exclusive for a pairing change
MAINTENANCE = 0x7E1E_CA8F  # one maintenance run at a time
ALERTS_LEADER = 0x7E1E_CA91  # held for its session by the one leading `telecare alerts`
# The class of a two-int key (class, hash of a citizen), a key space apart from the single keys
# above: one writer at a time decides whether a citizen's finding opens an alert.
CITIZEN_ALERTS_CLASS = 0x7E1E_CA92
# Taken at commit by every transaction that writes alert history (migrations/0009, where the
# number is written out): stream positions are drawn in the order the changes become visible.
ALERT_STREAM_ORDER = 0x7E1E_CA93
# The class of a two-int key (class, hashtext of a citizen's id): an erasure holds it
# exclusively; a retraining that stores her baselines and a requeue of her parked items hold it
# shared, so that neither puts anything of hers back after her erasure
# (alerts/baseline_repository.save, alerts/context_repository.requeue).
CITIZEN_ERASURE_CLASS = 0x7E1E_CA94
