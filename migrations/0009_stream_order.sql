-- The care team's stream resumes after the last event a client saw (Last-Event-ID). History
-- ids come from an identity, drawn at insert: a transaction that drew a smaller id can commit
-- after one that drew a larger id, and a client that resumed after the larger one would never
-- see the smaller. So the stream orders events by a number drawn at commit instead, under a
-- lock held until the commit is visible: a larger stream position is visible only after every
-- smaller one is. The lock is taken in the commit's deferred triggers, where the transaction
-- waits for nothing else, so it cannot take part in a deadlock.
ALTER TABLE alert_history ADD COLUMN stream_position bigint;
UPDATE alert_history SET stream_position = id;
CREATE SEQUENCE alert_stream_position;
SELECT setval('alert_stream_position', coalesce(max(id), 0) + 1, false) FROM alert_history;
CREATE UNIQUE INDEX alert_history_stream ON alert_history (stream_position);
CREATE INDEX alert_history_team_stream ON alert_history (care_team_id, stream_position);
DROP INDEX alert_history_team;

CREATE FUNCTION telecare_order_alert_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- core/locks.py ALERT_STREAM_ORDER
    PERFORM pg_advisory_xact_lock(2115947155);
    UPDATE alert_history SET stream_position = nextval('alert_stream_position')
     WHERE id = NEW.id;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER alert_history_stream_order AFTER INSERT ON alert_history
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION telecare_order_alert_change();
