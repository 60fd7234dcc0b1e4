-- A citizen discharged from telecare keeps their record (and what retention keeps of their
-- data); from this time no device is theirs and no plan watches them (api/registry.py).
ALTER TABLE citizens ADD COLUMN discharged_at timestamptz;
