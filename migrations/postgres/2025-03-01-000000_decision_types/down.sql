-- Back to one decision per (user_id, decision_idx). Decisions of other types than 'default',
-- and unavailable ones, have no place in that schema: rather than drop them, or let an
-- unavailable decision pass for a draw with probability 0, the revert refuses while any is
-- stored (restore a backup taken before the migration instead).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM actions WHERE decision_type <> 'default' OR NOT available)
       OR EXISTS (SELECT 1 FROM study_data WHERE decision_type <> 'default' OR NOT available)
    THEN
        RAISE EXCEPTION 'cannot revert 2025-03-01-000000_decision_types: decisions or uploads '
            'of other types than ''default'', or of unavailable decisions, are stored';
    END IF;
END
$$;

ALTER TABLE update_provenance DROP COLUMN last_study_data_id;

ALTER TABLE study_data
    DROP CONSTRAINT study_data_user_decision_key,
    DROP COLUMN available,
    DROP COLUMN decision_type,
    ADD CONSTRAINT study_data_user_decision_key UNIQUE (user_id, decision_idx);

ALTER TABLE actions
    DROP CONSTRAINT actions_user_decision_key,
    DROP CONSTRAINT actions_reason_when_unavailable,
    DROP CONSTRAINT actions_unavailable_not_drawn,
    DROP COLUMN unavailable_reason,
    DROP COLUMN available,
    DROP COLUMN decision_type,
    ADD CONSTRAINT actions_user_decision_key UNIQUE (user_id, decision_idx);
