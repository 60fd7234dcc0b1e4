-- One measurement, one alert (alerts/rules/threshold.py): a blood pressure's systolic and
-- diastolic raise `threshold:blood_pressure`, a garbled measurement `implausible:<measurement>`.
-- An alert still open under an old name takes the new one, so that the next finding about her
-- blood pressure repeats it rather than opening a second alert beside it. Where she has two
-- open (systolic and diastolic), the worse (then the later) takes the name; the other keeps its
-- old one until a nurse resolves it. Nothing is resolved or hidden here.
WITH old AS (
    SELECT id, citizen_id, severity, updated_at,
           CASE rule WHEN 'threshold:systolic_bp' THEN 'threshold:blood_pressure'
                     WHEN 'threshold:diastolic_bp' THEN 'threshold:blood_pressure'
                     WHEN 'implausible:systolic_bp' THEN 'implausible:blood_pressure'
                     WHEN 'implausible:diastolic_bp' THEN 'implausible:blood_pressure'
                     WHEN 'implausible:spo2' THEN 'implausible:pulse_oximetry' END AS rule
      FROM alerts
     WHERE state <> 'resolved'
       AND rule IN ('threshold:systolic_bp', 'threshold:diastolic_bp', 'implausible:systolic_bp',
                    'implausible:diastolic_bp', 'implausible:spo2')
), chosen AS (
    SELECT DISTINCT ON (citizen_id, rule) id, rule
      FROM old
     WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE a.citizen_id = old.citizen_id
                          AND a.rule = old.rule AND a.state <> 'resolved')
     ORDER BY citizen_id, rule, severity = 'red' DESC, updated_at DESC, id DESC
)
UPDATE alerts SET rule = chosen.rule FROM chosen WHERE alerts.id = chosen.id;
