-- Updates lose the record of what they imputed; the decisions and uploads stay.
ALTER TABLE update_provenance DROP COLUMN imputed_rows;
ALTER TABLE update_provenance DROP COLUMN default_reward;
ALTER TABLE update_provenance DROP COLUMN imputed_decided_by;
ALTER TABLE update_provenance DROP COLUMN last_action_id;
