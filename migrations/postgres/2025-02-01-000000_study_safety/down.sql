DROP INDEX model_update_requests_callback_idx;
DROP TABLE update_provenance;
ALTER TABLE model_update_requests
    DROP COLUMN callback_finished_at,
    DROP COLUMN callback_error,
    DROP COLUMN callback_attempts,
    DROP COLUMN callback_status,
    DROP COLUMN started_at,
    DROP COLUMN attempts;
ALTER TABLE study_data DROP COLUMN action_logged;
