-- The alert engine takes "every queued item of these citizens" (each batch, and the triage
-- lane). Without an index on the citizen each take was a sequential scan of the queue's whole
-- heap, and a queue's heap is mostly rows deleted since the last vacuum (about one per stored
-- reading): every batch got slower as they piled up, and under a steady 4,000 items/s the
-- engine fell behind (bench/alerts.py: the backlog after a 20 s run fell from about 3,000
-- items to about 140 with this index, same machine and load).
CREATE INDEX evaluation_queue_citizen ON evaluation_queue (citizen_id, id);
