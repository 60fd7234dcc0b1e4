-- A missed measurement first reminds the citizen on her screen, without an alert
-- (alerts/rules/schedule.py). Its occurrence (the metric, day and window) makes the reminder
-- once only, whichever `telecare alerts` process found the window and however often.
ALTER TABLE screen_messages ADD COLUMN occurrence text;
CREATE UNIQUE INDEX screen_messages_occurrence ON screen_messages (citizen_id, occurrence)
    WHERE occurrence IS NOT NULL;
