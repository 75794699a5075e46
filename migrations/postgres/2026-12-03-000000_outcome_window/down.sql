-- Updates lose the record of what they imputed; the decisions and uploads stay.
ALTER TABLE update_provenance
    DROP COLUMN imputed_rows,
    DROP COLUMN default_reward,
    DROP COLUMN imputed_decided_by,
    DROP COLUMN last_action_id;
