-- Reverts the trial's life. Decisions that were not drawn by the algorithm, or were stored for
-- a participant out of the study, lose what told them apart: the older schema has no columns
-- for it. Erased participants keep their pseudonyms; the audit records and histories go.
DROP INDEX update_provenance_last_study_data_idx;
CREATE INDEX update_provenance_last_study_data_idx
    ON update_provenance (last_study_data_id, parameter_version);
DROP INDEX users_started_idx;
DROP TABLE erasures;
DROP TABLE participant_events;
DELETE FROM sqlite_sequence WHERE name = 'participant_events';

ALTER TABLE update_provenance DROP COLUMN included_policies;
ALTER TABLE study_data DROP COLUMN policy;
ALTER TABLE actions DROP COLUMN in_study;
ALTER TABLE actions DROP COLUMN decided_by;
ALTER TABLE actions DROP COLUMN fallback_reason;
ALTER TABLE actions DROP COLUMN policy;
ALTER TABLE users DROP COLUMN erased_at;
ALTER TABLE users DROP COLUMN withdrawal_reason;
ALTER TABLE users DROP COLUMN withdrawn_at;
ALTER TABLE users DROP COLUMN study_end_sent;
ALTER TABLE users DROP COLUMN study_end;
ALTER TABLE users DROP COLUMN study_start_sent;
ALTER TABLE users DROP COLUMN study_start;
