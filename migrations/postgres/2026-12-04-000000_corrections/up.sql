-- Corrections of uploads. A study server that learns it uploaded a wrong value sends the
-- decision's upload again marked as a correction; it is stored here, linked to the original
-- study_data row, which is never changed. The value in force for a decision is its newest
-- correction (by id), else the original. Deleting the original (an erasure, a reset) deletes
-- its corrections.
CREATE TABLE study_data_corrections (
    id                BIGINT           GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    study_data_id     BIGINT           NOT NULL REFERENCES study_data (id) ON DELETE CASCADE,
    user_id           TEXT             NOT NULL,
    decision_type     TEXT             NOT NULL,
    decision_idx      BIGINT           NOT NULL,
    request_timestamp TIMESTAMPTZ      NOT NULL,
    sent_timestamp    TEXT             NOT NULL,
    created_at        TIMESTAMPTZ      NOT NULL,
    context           JSON             NOT NULL,
    state             JSON             NOT NULL,
    outcome           JSON             NOT NULL,
    reward            DOUBLE PRECISION NOT NULL
);
CREATE INDEX study_data_corrections_original_idx ON study_data_corrections (study_data_id, id);

-- The largest correction id the update's job could read: it learned from each upload's newest
-- correction at or below it. NULL for updates completed before corrections existed (none).
ALTER TABLE update_provenance ADD COLUMN last_correction_id BIGINT;
