-- The alert engine keeps each citizen's plans, thresholds and pauses in memory between batches
-- (alerts/configuration_cache.py). This one-row counter is raised in the transaction of every
-- change to them, so the engine, reading it in each of its transactions, forgets what it held
-- as soon as a change is visible to it and never evaluates with a stale plan or threshold.
-- Changes to these tables are rare (a nurse's edit), so the row is never hot.
CREATE TABLE alert_configuration_version (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version   bigint NOT NULL
);
INSERT INTO alert_configuration_version VALUES (true, 0);

CREATE FUNCTION telecare_configuration_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE alert_configuration_version SET version = version + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER citizen_plans_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON citizen_plans
    FOR EACH STATEMENT EXECUTE FUNCTION telecare_configuration_changed();
CREATE TRIGGER thresholds_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON thresholds
    FOR EACH STATEMENT EXECUTE FUNCTION telecare_configuration_changed();
CREATE TRIGGER alert_pauses_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON alert_pauses
    FOR EACH STATEMENT EXECUTE FUNCTION telecare_configuration_changed();
