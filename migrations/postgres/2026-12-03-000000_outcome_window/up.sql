-- What an update learned with the default reward ([update] missing_outcomes = "default_reward"):
-- every available decision of a policy it included, of a participant not withdrawn when it
-- started, made at or before `imputed_decided_by`, with an id at most `last_action_id` (the
-- newest decision its job could read), and without an upload at or below `last_study_data_id`,
-- each with `default_reward`. `imputed_rows` counts them. All NULL for an update that left
-- missing outcomes out, and for every update stored before this migration.
ALTER TABLE update_provenance
    ADD COLUMN last_action_id bigint,
    ADD COLUMN imputed_decided_by timestamptz,
    ADD COLUMN default_reward double precision,
    ADD COLUMN imputed_rows bigint;
